"""Compose files applied end to end, as a user runs `reconcile` on them, inside a throwaway
sandbox: a published port answers, services reach each other by name, a change is applied,
warnings reach the plan, and `down` leaves nothing of ours."""

from __future__ import annotations

import json
from pathlib import Path

from tests.compose_support import fetch, reconcile_ok, web_image
from tests.sandbox import Sandbox
from tests.waiting import eventually

SHOP = """\
name: rc-h16-shop
services:
  web:
    image: "oci:{layout}:v1"
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["${{RC_H16_PORT:-8080}}:80"]
    expose: ["80"]
  client:  # every service names an image, as Compose requires
    image: "oci:{layout}:v1"
    command: ["sleep", "100000"]
    depends_on: [web]
networks:
  default:
    ipam:
      config: [{{subnet: 10.92.0.0/24}}]
"""


def test_a_compose_file_is_applied_changed_and_brought_down(sandbox: Sandbox, tmp_path: Path) -> None:
    layout = web_image(tmp_path / "layout").layout
    compose = sandbox.workdir / "shop" / "compose.yaml"
    compose.parent.mkdir()
    compose.write_text(SHOP.format(layout=layout))

    plan = reconcile_ok(sandbox, "apply", str(compose))
    assert "+ container rc-h16-shop/web" in plan and "+ container rc-h16-shop/client" in plan
    assert f"WARNING: {compose}:7:5: services.web.expose: has no effect here" in plan
    assert eventually(lambda: fetch(sandbox, "http://127.0.0.1:8080/"), "hello from compose\n",
                      timeout=10.0) == "hello from compose\n"
    by_name = reconcile_ok(sandbox, "exec", "rc-h16-shop/client", "--", "wget", "-qO-", "http://web/")
    assert by_name == "hello from compose\n"
    assert "No changes" in reconcile_ok(sandbox, "apply", str(compose))

    (compose.parent / ".env").write_text("RC_H16_PORT=8081\n")  # a change through interpolation
    changed = sandbox.reconcile("diff", str(compose))
    assert changed.returncode == 2 and "8080" in changed.stdout and "8081" in changed.stdout, changed.stdout
    reconcile_ok(sandbox, "apply", str(compose))
    assert eventually(lambda: fetch(sandbox, "http://127.0.0.1:8081/"), "hello from compose\n",
                      timeout=10.0) == "hello from compose\n"
    assert fetch(sandbox, "http://127.0.0.1:8080/") == ""

    reconcile_ok(sandbox, "down", str(compose))
    assert sandbox.netns_names() == [] and sandbox.our_links() == []


ENV_STACK = """\
services:
  app:
    image: "oci:{layout}:v1"
    env_file: [app.env]
    environment:
      FROM_COMPOSE: "${{RC_H16_GREETING}}"
  debug:
    image: "oci:{layout}:v1"
    profiles: [debug]
networks:
  default:
    ipam: {{config: [{{subnet: 10.93.0.0/24}}]}}
"""

NATIVE = """\
name: rc-h16-native
networks:
  net: {{subnet: 10.94.0.0/24}}
containers:
  box: {{image: "oci:{layout}:v1", networks: [net]}}
"""


def test_a_directory_of_compose_and_native_files(sandbox: Sandbox, tmp_path: Path) -> None:
    """The project name is the directory's; env_file, .env and profiles as Compose reads them;
    a native stack file beside it is applied with it; warnings are JSON too."""
    layout = web_image(tmp_path / "layout").layout
    project = sandbox.workdir / "rc-h16-env"
    project.mkdir()
    (project / "compose.yaml").write_text(ENV_STACK.format(layout=layout) + "x-note: ignored\nversion: '3'\n")
    (project / ".env").write_text("RC_H16_GREETING='hello $USER'\n")
    (project / "app.env").write_text("FROM_FILE=file value\n")
    (project / "native.yaml").write_text(NATIVE.format(layout=layout))

    applied = json.loads(reconcile_ok(sandbox, "apply", "-o", "json", str(project)))
    assert applied["warnings"] == [f"{project / 'compose.yaml'}:14:1: version: is obsolete and ignored, as docker "
                                   "compose ignores it"]
    running = {(s["name"], c["name"]) for s in sandbox.status()["stacks"] for c in s["containers"]}
    assert running == {("rc-h16-env", "app"), ("rc-h16-native", "box")}  # debug's profile is not enabled
    env = reconcile_ok(sandbox, "exec", "rc-h16-env/app", "--", "env").splitlines()
    assert "FROM_FILE=file value" in env and "FROM_COMPOSE=hello $USER" in env

    reconcile_ok(sandbox, "down", str(project))
    assert sandbox.netns_names() == [] and sandbox.our_links() == []


def test_the_watch_agent_applies_a_change_of_dotenv_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    """A Compose file reads `.env`: the agent watching its directory applies a change made to
    `.env` only, as it applies a change of the file itself; it logs the file's warnings."""
    from tests.watch_agent import Agent  # the agent as a user runs it

    project = sandbox.workdir / "shop"
    project.mkdir()
    (project / "compose.yaml").write_text(SHOP.format(layout=web_image(tmp_path / "layout").layout))
    agent = Agent(sandbox, project, "--resync", "600", "--debounce", "50")
    try:
        assert eventually(lambda: fetch(sandbox, "http://127.0.0.1:8080/"), "hello from compose\n",
                          timeout=30.0) == "hello from compose\n"
        assert any(line.get("event") == "spec warning" and "services.web.expose: has no effect here"
                   in str(line.get("warning")) for line in agent.lines), agent.lines  # as apply's plan says
        (project / ".env").write_text("RC_H16_PORT=8082\n")
        assert eventually(lambda: fetch(sandbox, "http://127.0.0.1:8082/"), "hello from compose\n",
                          timeout=30.0) == "hello from compose\n"
    finally:
        assert agent.stop() == 0
    reconcile_ok(sandbox, "down", str(project / "compose.yaml"))


def test_network_mode_none_gives_a_service_its_loopback_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    """As Docker's: a network namespace of its own with `lo` and nothing else, no network made
    for it (its project's `default` is made only for services on it)."""
    layout = web_image(tmp_path / "layout").layout
    compose = sandbox.workdir / "alone" / "compose.yaml"
    compose.parent.mkdir()
    compose.write_text(f'name: rc-nm\nservices:\n  box:\n    image: "oci:{layout}:v1"\n    network_mode: none\n')
    plan = reconcile_ok(sandbox, "apply", str(compose))
    assert "+ container rc-nm/box" in plan and "+ network" not in plan
    devices = reconcile_ok(sandbox, "exec", "rc-nm/box", "--", "cat", "/proc/net/dev")
    assert [line.split(":")[0].strip() for line in devices.splitlines()[2:]] == ["lo"]
    assert sandbox.our_links() == []
    reconcile_ok(sandbox, "down", str(compose))


NAMES = """\
name: rc-h16-names
services:
  Notification_Service.worker-with-a-name-far-longer-than-sixteen:
    image: "oci:{layout}:v1"
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["8080:80"]
    networks: [back_end_network_with_a_long_name]
  my_client:
    image: "oci:{layout}:v1"
    command: ["sleep", "100000"]
    depends_on: [Notification_Service.worker-with-a-name-far-longer-than-sixteen]
    networks: [back_end_network_with_a_long_name]
networks:
  back_end_network_with_a_long_name:
    ipam: {{config: [{{subnet: 10.95.0.0/24}}]}}
"""


def test_service_and_network_names_as_compose_users_write_them(sandbox: Sandbox, tmp_path: Path) -> None:
    """Names longer than 16 and with capitals, '_' or '.' run as their keys (lower case, '-'),
    up to 63 long, in every kernel object (netns, cgroups, the runtime's id, rule comments); a
    peer still reaches a service by the name written in the file, `exec` takes that name too, and
    `down` finds and removes all from the kernel's marks alone."""
    layout = web_image(tmp_path / "layout").layout
    compose = sandbox.workdir / "names" / "compose.yaml"
    compose.parent.mkdir()
    compose.write_text(NAMES.format(layout=layout))
    key = "notification-service-worker-with-a-name-far-longer-than-sixteen"

    plan = reconcile_ok(sandbox, "apply", str(compose))
    assert f"+ container rc-h16-names/{key}" in plan and "+ container rc-h16-names/my-client" in plan
    assert f"rc-rc-h16-names_{key}" in sandbox.netns_names()
    assert all((top / "rc-h16-names" / key).is_dir() for top in sandbox.cgroup_dirs())
    assert eventually(lambda: fetch(sandbox, "http://127.0.0.1:8080/"), "hello from compose\n",
                      timeout=10.0) == "hello from compose\n"
    for name in ("Notification_Service.worker-with-a-name-far-longer-than-sixteen", key):
        by_name = reconcile_ok(sandbox, "exec", "rc-h16-names/my_client", "--", "wget", "-qO-", f"http://{name}/")
        assert by_name == "hello from compose\n", name
    assert reconcile_ok(sandbox, "exec", f"rc-h16-names/{key}", "--", "hostname") == f"{key}\n"
    assert "No changes" in reconcile_ok(sandbox, "apply", str(compose))

    sandbox.run("rm", "-f", str(sandbox.state_dir / "state.db"))  # what is ours is read from the kernel's marks
    reconcile_ok(sandbox, "down", "--stack", "rc-h16-names")
    assert sandbox.netns_names() == [] and sandbox.our_links() == [] and sandbox.cgroup_dirs() == []
    assert sandbox.processes() == []


FILES = """\
name: rc-h16-files
services:
  app:
    image: "oci:{layout}:v1"
    command: ["sleep", "100000"]
    read_only: true
    secrets: [db_password, {{source: db_password, target: copy, mode: 0440}}]
    configs: [{{source: app_config, target: /etc/app/app.conf}}]
secrets:
  db_password: {{file: ./db_password.txt}}
configs:
  app_config: {{file: conf/app.conf}}
networks:
  default:
    ipam: {{config: [{{subnet: 10.96.0.0/24}}]}}
"""


def test_secrets_and_configs_are_the_files_mounted_read_only(sandbox: Sandbox, tmp_path: Path) -> None:
    """As docker compose without Swarm: each file declared in the top-level secrets and configs
    is bind-mounted read-only where a service lists it (a secret under /run/secrets, a config at
    its target), in a read-only container too; `mode` is a warning."""
    layout = web_image(tmp_path / "layout").layout
    project = sandbox.workdir / "files"
    (project / "conf").mkdir(parents=True)
    (project / "db_password.txt").write_text("s3cret\n")
    (project / "conf" / "app.conf").write_text("port = 80\n")
    compose = project / "compose.yaml"
    compose.write_text(FILES.format(layout=layout))

    plan = reconcile_ok(sandbox, "apply", str(compose))
    assert f"WARNING: {compose}:7:28: services.app.secrets[1]: mode has no effect here" in plan
    cat = ("cat", "/run/secrets/db_password", "/run/secrets/copy", "/etc/app/app.conf")
    assert reconcile_ok(sandbox, "exec", "rc-h16-files/app", "--", *cat) == "s3cret\ns3cret\nport = 80\n"
    written = sandbox.reconcile("exec", "rc-h16-files/app", "--", "sh", "-c", "echo x > /run/secrets/db_password")
    assert written.returncode != 0 and "Read-only file system" in written.stderr
    assert "No changes" in reconcile_ok(sandbox, "apply", str(compose))
    (project / "db_password.txt").unlink()
    missing = sandbox.reconcile("diff", str(compose))
    assert missing.returncode == 1 and (f"{compose}:7:15: services.app.secrets[0]: volume source "
                                        f"{project / 'db_password.txt'} does not exist on this host") in missing.stderr

    reconcile_ok(sandbox, "down", str(compose))
    assert sandbox.netns_names() == [] and sandbox.our_links() == []
