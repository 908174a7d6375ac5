"""Named volumes end to end, in a throwaway sandbox: a volume made on the first start and
filled from the image at its mount point, its data kept across a recreate and across `down` +
`apply`, removed by `down --volumes` only; two stacks never share a volume of the same name; a
Compose file's named volume works the same."""

from __future__ import annotations

import json
from pathlib import Path

from tests.image_builder import BuiltImage, Layer, build
from tests.sandbox import Sandbox


def data_image(path: Path) -> BuiltImage:
    return build(path, [Layer.busybox(), Layer(files={"/var/lib/app/seed.txt": "from the image\n"})],
                 cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="v1")


STACK = """\
name: {name}
volumes:
  data: {{}}
containers:
  app:
    image: "oci:{layout}:v1"
    env: {{ROUND: "{round}"}}
    volumes: ["data:/var/lib/app"]
"""


def ok(sandbox: Sandbox, *args: str) -> str:
    result = sandbox.reconcile(*args)
    if result.returncode != 0:
        debug = sandbox.reconcile("--debug", *args)
        raise AssertionError(result.stdout + result.stderr + debug.stderr)
    return result.stdout


def in_app(sandbox: Sandbox, stack: str, script: str) -> str:
    return ok(sandbox, "exec", f"{stack}/app", "--", "sh", "-c", script)




def test_a_named_volume_outlives_recreates_and_down(sandbox: Sandbox, tmp_path: Path) -> None:
    layout = data_image(tmp_path / "layout").layout
    stack = sandbox.write("stack.yaml", STACK.format(name="rc-h16e-vol", layout=layout, round=1))
    ok(sandbox, "apply", str(stack))
    volume = sandbox.state_dir / "volumes" / "rc-h16e-vol" / "data"
    # Filled from the image on first use, as Docker fills a new volume.
    assert (volume / "seed.txt").read_text() == "from the image\n"
    in_app(sandbox, "rc-h16e-vol", "echo kept > /var/lib/app/written")
    assert (volume / "written").read_text() == "kept\n"

    stack.write_text(STACK.format(name="rc-h16e-vol", layout=layout, round=2))  # env: a recreate
    assert "rc-h16e-vol/app" in ok(sandbox, "apply", str(stack))
    assert in_app(sandbox, "rc-h16e-vol", "cat /var/lib/app/written; echo $ROUND") == "kept\n2\n"

    rows = json.loads(ok(sandbox, "status", "-o", "json"))["stacks"][0]["volumes"]
    assert rows == [{"name": "data", "path": str(volume), "state": "present"}]

    down = json.loads(ok(sandbox, "down", "-o", "json", str(stack)))
    assert down["volumes_kept"] == [{"stack": "rc-h16e-vol", "name": "data", "path": str(volume)}]
    assert down["volumes_removed"] == []
    assert (volume / "written").read_text() == "kept\n"
    ok(sandbox, "apply", str(stack))
    assert in_app(sandbox, "rc-h16e-vol", "cat /var/lib/app/written") == "kept\n"

    text = ok(sandbox, "down", "--volumes", str(stack))
    assert f"Removed volume rc-h16e-vol/data ({volume})." in text
    assert not (sandbox.state_dir / "volumes" / "rc-h16e-vol").exists()
    assert sandbox.status()["stacks"] == []


def test_two_stacks_do_not_share_a_volume_name(sandbox: Sandbox, tmp_path: Path) -> None:
    layout = data_image(tmp_path / "layout").layout
    for name in ("rc-h16e-one", "rc-h16e-two"):
        ok(sandbox, "apply", str(sandbox.write(f"{name}.yaml", STACK.format(name=name, layout=layout, round=1))))
        in_app(sandbox, name, f"echo {name} > /var/lib/app/owner")
    for name in ("rc-h16e-one", "rc-h16e-two"):
        assert in_app(sandbox, name, "cat /var/lib/app/owner") == f"{name}\n"
    removed = json.loads(ok(sandbox, "down", "-o", "json", "--volumes", "--stack", "rc-h16e-one"))
    assert [v["stack"] for v in removed["volumes_removed"]] == ["rc-h16e-one"]
    assert in_app(sandbox, "rc-h16e-two", "cat /var/lib/app/owner") == "rc-h16e-two\n"
    ok(sandbox, "down", "--volumes", "--stack", "rc-h16e-two")


COMPOSE = """\
name: rc-h16e-compose
services:
  app:
    image: "oci:{layout}:v1"
    volumes:
      - app_data:/var/lib/app
      - {{type: volume, source: app_data, target: /mnt/ro, read_only: true}}
volumes:
  app_data:
"""


def test_a_compose_named_volume(sandbox: Sandbox, tmp_path: Path) -> None:
    layout = data_image(tmp_path / "layout").layout
    compose = sandbox.workdir / "proj" / "compose.yaml"
    compose.parent.mkdir()
    compose.write_text(COMPOSE.format(layout=layout))
    ok(sandbox, "apply", str(compose))
    in_app(sandbox, "rc-h16e-compose", "echo hi > /var/lib/app/x")
    assert in_app(sandbox, "rc-h16e-compose", "cat /mnt/ro/x /mnt/ro/seed.txt") == "hi\nfrom the image\n"
    assert sandbox.reconcile("exec", "rc-h16e-compose/app", "--", "sh", "-c", "echo no > /mnt/ro/y").returncode != 0
    assert (sandbox.state_dir / "volumes" / "rc-h16e-compose" / "app_data" / "x").read_text() == "hi\n"
    ok(sandbox, "down", "--volumes", str(compose))
    assert not (sandbox.state_dir / "volumes" / "rc-h16e-compose").exists()
