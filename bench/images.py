"""Images: N containers from one image (cold apply, no-op apply, no-op diff, down) beside the
floor (bench/containers.py's, with the image's layers as the roots' lowers), and pulls from a
registry on loopback (Debian's docker-registry, in the throwaway host): a ~100 MB image pulled
by `reconcile image pull` into an empty store against `skopeo copy` of the same image into an
empty OCI layout, alone (medians of three of each, interleaved); then a second image sharing its
base layers, of which only the new layer is fetched; then the cold apply of a stack of three
containers, each its own image, from an empty store against the same with its images already
pulled (the difference: its pulls).

Run as root: `.venv/bin/python bench/images.py` (it re-executes itself in a throwaway host).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, reconcile, reexec_in_throwaway_host, remove_state_dir, time_cli_round  # noqa: E402
from bench.containers import LIMITS, floor  # noqa: E402
from state.images import ImageStore  # noqa: E402
from tests.image_builder import Layer, build  # noqa: E402
from tests.registry import CONFIG  # noqa: E402

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "50").split(","))
BIG_BYTES = int(os.environ.get("BENCH_IMAGE_MB", "100")) * 1024 * 1024
PULL_ROUNDS = 3
"""Pulls (and copies) timed: the medians are shown, the machine being busy or not."""
REGISTRY = "127.0.0.1:5000"
STACK_IMAGES = 3
"""Images of the stack whose apply pulls them (app, database, cache)."""


def stack_text(n: int, image: str) -> str:
    return stack_of([image] * n)


def stack_of(images: Sequence[str]) -> str:
    """A stack of one container per image, in order."""
    containers = "".join(f"  c{i}:\n    image: {image}\n    networks: [net]\n"
                         f"    ports: [\"{20000 + i}:80\"]\n{LIMITS}" for i, image in enumerate(images))
    return f"name: bench\nnetworks:\n  net:\n    subnet: 10.60.0.0/22\ncontainers:\n{containers}"


def start_registry(work: Path) -> subprocess.Popen[bytes]:
    (work / "registry").mkdir()
    config = work / "registry.yml"
    config.write_text(CONFIG.format(root=work / "registry", address=REGISTRY))
    server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{REGISTRY}/none:0"],
                         capture_output=True, text=True).stderr.count("connection refused"):
        if time.monotonic() > deadline:
            raise SystemExit("docker-registry did not start")
        time.sleep(0.05)
    return server


@contextmanager
def loopback_registry(prefix: str) -> Iterator[Path]:
    """A work directory with Debian's docker-registry serving from it on REGISTRY; both are
    gone afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    server = start_registry(work)
    try:
        yield work
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


def small_image(work: Path) -> str:
    """busybox-static running `sleep 100000`, built in `work` and pushed to the loopback
    registry: its reference there."""
    small = build(work / "layout", [Layer.busybox()], cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="small")
    push(small.ref, "small:1")
    return f"{REGISTRY}/small:1"


def push(image_ref: str, target: str) -> None:
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", image_ref, f"docker://{REGISTRY}/{target}"],
                   check=True, capture_output=True)


def timed_run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:5])}... exited {proc.returncode}: {proc.stderr}")
    return elapsed, proc.stdout


def container_rows(work: Path) -> list[list[object]]:
    image = small_image(work)
    rows = []
    for n in SIZES:
        times = time_cli_round(stack_text(n, image), before=[("image", "pull", image)])
        state = Path(tempfile.mkdtemp(prefix="rc-bench-image-"))
        try:
            timed_run(reconcile("image", "pull", image), {**os.environ, "RECONCILE_STATE_DIR": str(state),
                                                          "PYTHONPATH": str(Path(__file__).parent.parent)})
            store = ImageStore(state)
            lowers = store.lower_dirs(store.images()[0])
            floor_run = floor(n, state / "floor", lowers)
            floor_up, floor_down, starts = floor_run.up, floor_run.down, floor_run.started
        finally:
            remove_state_dir(state)
        rows.append([n, times.cold_apply, times.noop_apply, times.noop_diff, times.down, floor_up, floor_down,
                     f"{starts / n * 1000:.1f}"])
    return rows


def pull_rows(work: Path) -> list[list[object]]:
    base = [Layer.busybox(), Layer.random(BIG_BYTES, seed=1)]
    big = build(work / "layout", base, cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag="big")
    second = build(work / "layout", [*base, Layer(files={"/app/version": "2\n"})], cmd=["sleep", "100000"],
                   env={"PATH": "/bin"}, tag="second")
    push(big.ref, "big:1")
    push(second.ref, "second:1")
    copies, pulls = [], []
    for round_ in range(PULL_ROUNDS):  # each into an empty layout and an empty store
        env = {**os.environ, "RECONCILE_STATE_DIR": str(work / f"state-{round_}"),
               "PYTHONPATH": str(Path(__file__).parent.parent)}
        copies.append(timed_run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{REGISTRY}/big:1",
                                 f"oci:{work / f'floor-layout-{round_}'}:big"])[0])
        pulls.append(timed_run(reconcile("image", "pull", f"{REGISTRY}/big:1"), env)[0])
    floor_copy, pull_big = statistics.median(copies), statistics.median(pulls)
    pull_second, out = timed_run(reconcile("image", "pull", "-o", "json", f"{REGISTRY}/second:1"), env)
    events = [json.loads(line) for line in out.splitlines()]
    fetched = [e for e in events if e.get("event") == "layer" and e["status"] == "done"]
    size = sum(big.layer_sizes) / 1024 / 1024
    return [[f"{size:.0f} MB, 2 layers", pull_big, floor_copy, f"{pull_big / floor_copy:.2f}x", "-"],
            ["+1 small layer (shares the base)", pull_second, "-", "-", f"{len(fetched)} of {len(second.diff_ids)}"]]


def stack_pull_rows(work: Path) -> list[list[object]]:
    """A stack of STACK_IMAGES containers, each its own image (busybox and a random layer of a
    third of BENCH_IMAGE_MB): its cold apply from an empty store (the pulls in it) against its
    cold apply with the images pulled first (untimed), medians of PULL_ROUNDS each, interleaved."""
    references = []
    for i in range(STACK_IMAGES):
        image = build(work / "stack-layout", [Layer.busybox(), Layer.random(BIG_BYTES // STACK_IMAGES, seed=10 + i)],
                      cmd=["sleep", "100000"], env={"PATH": "/bin"}, tag=f"part{i}")
        push(image.ref, f"part{i}:1")
        references.append(f"{REGISTRY}/part{i}:1")
    text = stack_of(references)
    cold, warm = [], []
    for _ in range(PULL_ROUNDS):
        cold.append(time_cli_round(text).cold_apply)
        warm.append(time_cli_round(text, before=[("image", "pull", ref) for ref in references]).cold_apply)
    pulling, pulled = statistics.median(cold), statistics.median(warm)
    return [[f"{STACK_IMAGES} images of {BIG_BYTES // STACK_IMAGES / 1024 / 1024:.0f} MB", pulling, pulled,
             f"{pulling - pulled:.3f}"]]


def main() -> None:
    reexec_in_throwaway_host()
    with loopback_registry("rc-bench-images-") as work:
        rows = container_rows(work)
        pulls = pull_rows(work)
        stack_pulls = stack_pull_rows(work)
    print_table(["containers (one image)", "cold apply s", "no-op apply s", "no-op diff s", "down s", "floor up s",
                 "floor down s", "floor ms/start"], rows)
    print()
    print_table(["pull", "reconcile image pull s", "skopeo copy alone s", "ratio", "layers unpacked"], pulls)
    print()
    print_table(["stack", "cold apply s (pulls its images)", "cold apply s (images here)", "pulls s"], stack_pulls)


if __name__ == "__main__":
    main()
