"""The command line: parse arguments, call a verb, print its result, map errors to exit codes.

No traceback reaches a user unless --debug: every expected failure is a typed error printed as
one line per problem. A verb imports the engine it drives when it runs: the controllers and the
spec model take ~0.2 s to import, which an `image` verb does without.
"""

from __future__ import annotations

import argparse
import codecs
import gc
import importlib
import io
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from reconcile.engine.settings import (
    DEFAULT_CGROUP_PARENT,
    DEFAULT_STATE_DIR,
    DEFAULT_SUBNET_POOL,
    FIREWALL_BACKENDS,
    Settings,
    SettingsError,
)
from state.subnets import SubnetPool

if TYPE_CHECKING:
    from reconcile.engine.session import Session
    from state.images import PullEvent

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2  # `diff` only: the host differs from the spec
EXIT_INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C, as a shell reports a process SIGINT ended


class UsageError(Exception):
    """A bad command line: main prints it (as text or JSON, as -o asks) and exits 1."""

    def __init__(self, prog: str, usage: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which `diff` means as "changes" (a CI job would read a
    typo as drift): 1, as every other error, and printed as JSON under -o json."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, self.format_usage(), message)


class _VerbParser(_Parser):
    """A verb's own parser: an argument it does not know is its error, with its usage (argparse
    leaves it to the top-level parser, whose usage lists the verbs)."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _common() -> _VerbParser:
    """Options accepted before or after the verb (SUPPRESS keeps the sub-parser from
    overwriting a value given before the verb with its default): a parent of each verb's parser."""
    common = _VerbParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS,
                        help="state store directory (env RECONCILE_STATE_DIR, default /var/lib/reconcile)")
    common.add_argument("--cgroup-parent", default=argparse.SUPPRESS,
                        help="cgroup under which containers live (env RECONCILE_CGROUP_PARENT, default reconcile)")
    common.add_argument("--subnet-pool", type=_subnet_pool, default=argparse.SUPPRESS, metavar="base=CIDR,size=N",
                        help="where networks without a subnet get one (env RECONCILE_SUBNET_POOL, "
                             f"default {DEFAULT_SUBNET_POOL})")
    common.add_argument("--firewall-backend", choices=FIREWALL_BACKENDS, default=argparse.SUPPRESS,
                        help="netfilter backend for published ports and isolation (env "
                             "RECONCILE_FIREWALL_BACKEND, default auto: nftables when nft works here, iptables "
                             "under a foreign FORWARD DROP policy)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    common.add_argument("-o", "--output", choices=("text", "json"), default=argparse.SUPPRESS,
                        help="output format")
    return common


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 86400 * 365:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds greater than 0")
    return value


def _milliseconds(text: str) -> int:
    """watchfiles takes the debounce as an unsigned integer: a negative one kills its thread."""
    if not text.isdigit() or int(text) >= 86400 * 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole milliseconds, 0 or more")
    return int(text)


def _tail_lines(text: str) -> int | None:
    """As `docker logs --tail`: a number of lines, or `all` (None: no tail)."""
    if text == "all":
        return None
    if not (text.isascii() and text.isdigit()):  # isdigit alone takes '²', which int() refuses
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of lines, 0 or more, or 'all'")
    return int(text)


def _subnet_pool(text: str) -> str:
    try:
        SubnetPool.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _stack_name(text: str) -> str:
    from specs.fields import name_checker

    try:
        return name_checker("stack name")(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="reconcile", parents=[common],
                                     description="Declarative reconciler for Linux hosts.")
    verbs_ = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=_VerbParser)

    def verb(name: str, help_: str) -> argparse.ArgumentParser:
        return verbs_.add_parser(name, parents=[common], help=help_, description=help_)

    verb("validate", "parse and validate stack files; touch nothing").add_argument("path", type=Path)
    diff = verb("diff", "show the plan against the live host; touch nothing")
    apply = verb("apply", "converge the host to the stack files")
    for planning in (diff, apply):
        planning.add_argument("path", type=Path)
        planning.add_argument("--take-over", action="store_true",
                              help="move a stack to this file though the file it was applied from still declares it")
    apply.add_argument("--pull", action="store_true",
                       help="resolve every image tag again (as pull: always), recreating what moved")
    down = verb("down", "remove everything of the given stacks")
    target = down.add_mutually_exclusive_group(required=True)
    target.add_argument("path", type=Path, nargs="?", help="stack file or directory")
    target.add_argument("--stack", action="append", type=_stack_name, help="stack name (repeatable)")
    down.add_argument("--volumes", action="store_true", help="remove the stacks' named volumes too (their data)")
    verb("status", "what runs and how far it is from the spec").add_argument(
        "path", type=Path, nargs="?", help="stack file or directory (default: every known stack)")
    watch = verb("watch", "keep the host equal to a directory of stack files: apply changes, "
                          "repair drift, prune removed stacks (runs until SIGTERM/SIGINT)")
    watch.add_argument("directory", type=Path, help="directory of *.yaml / *.yml stack files")
    watch.add_argument("--no-prune", dest="prune", action="store_false",
                       help="leave a stack running when its file is deleted")
    watch.add_argument("--resync", type=_seconds, default=30.0, metavar="SECONDS",
                       help="full resync period, for drift that raises no event (default 30)")
    watch.add_argument("--debounce", type=_milliseconds, default=100, metavar="MS",
                       help="wait for file changes to settle this long (default 100)")
    watch.add_argument("--metrics-addr", metavar="[HOST]:PORT", help="serve Prometheus metrics here")
    watch.add_argument("--restart-backoff", type=_seconds, default=10.0, metavar="SECONDS",
                       help="first crash-loop delay, doubled per crash (default 10)")
    watch.add_argument("--restart-backoff-max", type=_seconds, default=300.0, metavar="SECONDS",
                       help="crash-loop delay cap (default 300)")
    watch.add_argument("--restart-stable", type=_seconds, default=60.0, metavar="SECONDS",
                       help="a run this long resets the crash-loop delay (default 60)")
    image = verb("image", "the image store: pull, ls, rm, prune")
    image_verbs = image.add_subparsers(dest="image_verb", required=True, metavar="IMAGE_VERB")
    image_verbs.add_parser("pull", parents=[common], help="fetch an image (a tag again) and unpack its layers"
                           ).add_argument("reference")
    image_verbs.add_parser("ls", parents=[common], help="images on this host: digest, size, containers using it")
    image_verbs.add_parser("rm", parents=[common], help="remove images no container runs").add_argument(
        "reference", nargs="+")
    image_verbs.add_parser("prune", parents=[common], help="remove every image no container runs and no "
                                                           "applied stack names")
    verb("schema", "print the JSON Schema of the stack file")
    verb("convert", "print a Compose file as a native stack file (YAML, or JSON with -o json)").add_argument(
        "path", type=Path, help="a Compose file")
    logs = verb("logs", "print a container's output")
    logs.add_argument("name", help="STACK/CONTAINER, or CONTAINER when unambiguous")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new output until the container exits")
    logs.add_argument("-n", "--tail", type=_tail_lines, default=None, metavar="N",
                      help="only the last N lines, then (with -f) what comes ('all', the default: all kept)")
    run = verb("exec", "run a command inside a running container")
    run.add_argument("name", help="STACK/CONTAINER, or CONTAINER when unambiguous")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    return parser


def _print_json(data: object) -> None:
    """Indented JSON in one write, by pydantic_core's encoder: ~9x faster than json's indenting
    one, which is pure Python (4 ms against 35 for `status` of 1,000 containers). The same
    layout and the same values once parsed; it writes text beyond ASCII (and DEL) as is, and
    small floats in plain notation (0.00001, not 1e-05). json's, escaping to ASCII, where
    pydantic_core's cannot: text that is not valid Unicode (a lone surrogate from a file name),
    or an output that is not UTF-8."""
    from pydantic_core import PydanticSerializationError, to_json

    try:
        text = to_json(data, indent=2).decode() if _stdout_is_utf8() else None
    except PydanticSerializationError:
        text = None
    sys.stdout.write((text if text is not None else json.dumps(data, indent=2)) + "\n")


def _stdout_is_utf8() -> bool:
    """Whether documents may carry text beyond ASCII as is; otherwise each format's own escapes
    keep them whole (main's backslashes would change a value read back)."""
    return sys.stdout.encoding is not None and codecs.lookup(sys.stdout.encoding).name == "utf-8"


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from specs.loader import load_path

    files = load_path(args.path)
    warnings = [str(warning) for f in files for warning in f.warnings]
    if args.output == "json":
        _print_json({"valid": True, "stacks": [{"name": f.stack.name, "file": str(f.path)} for f in files],
                     "warnings": warnings})
    else:
        print("".join(f"WARNING: {warning}\n" for warning in warnings)
              + f"ok: {len(files)} stack(s) valid: " + ", ".join(f"{f.stack.name} ({f.path})" for f in files))
    return EXIT_OK


def cmd_convert(args: argparse.Namespace, settings: Settings) -> int:
    """The native stack of a Compose file, validated first (errors at the Compose fields); its
    warnings go to stderr, so that stdout is the stack file alone."""
    from ruamel.yaml import YAML

    from specs.convert import native_document

    native, warnings = native_document(args.path)
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.output == "json":
        _print_json(native)
    else:
        yaml = YAML(typ="rt")  # keeps the order of the keys, as the conversion writes them
        yaml.default_flow_style = False
        yaml.allow_unicode = _stdout_is_utf8()  # else YAML's "\xe9" escapes
        yaml.dump(native, sys.stdout)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    from reconcile.engine import render, verbs

    plan = verbs.diff(args.path, settings, args.take_over)
    if args.output == "json":
        _print_json(render.plan_json(plan))
    else:
        render.emit(render.format_plan(plan, render.use_colour(sys.stdout)))
    return EXIT_OK if plan.empty else EXIT_CHANGES


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    from reconcile.engine import pinning, render, verbs

    show = _pull_progress(sys.stderr, as_json=False) if sys.stderr.isatty() and args.output != "json" else _quiet
    plan = verbs.apply(args.path, settings, pinning.Pulling(allowed=True, force=args.pull, progress=show),
                       args.take_over)
    if args.output == "json":
        _print_json({**render.plan_json(plan), "applied": True})
    else:
        render.emit(render.format_applied(plan, render.use_colour(sys.stdout)))
    return EXIT_OK


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    """A stack named with --stack that this host does not know is an error (a typo must not
    pass for a teardown), after the others are removed; a file's stack already gone is not, but
    is said plainly: "The host matches the spec" of a stack never looked for misled."""
    from reconcile.engine import render, verbs

    names = args.stack or verbs.stacks_in(args.path, settings)
    done = verbs.down(names, settings, remove_volumes=args.volumes)
    unknown = [f"error: no stack named '{name}' on this host (no kernel object carries its mark, the state "
               "store has no record of it)" for name in done.unknown] if args.stack else []
    absent = [] if args.stack else list(done.unknown)
    if args.output == "json":
        _print_json({**render.plan_json(done.plan), "applied": True,
                     **render.volumes_json(done.volumes_removed, done.volumes_kept),
                     **({"absent": absent} if absent else {}),
                     **({"error": "unknown stack", "messages": unknown} if unknown else {})})
        return EXIT_ERROR if unknown else EXIT_OK
    if len(done.unknown) < len(names) or not done.plan.empty:
        render.emit(render.format_applied(done.plan, render.use_colour(sys.stdout)))
    elif done.plan.warnings:  # what the run found on the host, whichever stacks it was asked for
        render.emit("\n".join(render.format_warnings(done.plan)))
    for name in absent:
        print(f"stack '{name}': nothing of it on this host")
    render.emit_volumes(done.volumes_removed, done.volumes_kept)
    for line in unknown:
        print(line, file=sys.stderr)
    return EXIT_ERROR if unknown else EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from reconcile.engine import render
    from reconcile.engine.session import open_session

    with open_session(settings, writable=False) as session:
        document = _status_document(session, args.path)
    if args.output == "json":
        _print_json(document)
    else:
        render.emit(render.format_status(document))
    return EXIT_OK


def _status_document(session: Session, path: Path | None) -> dict[str, object]:
    """The stacks of the file(s) at `path`, else every stack this host knows, from one
    observation (freed on return, before the document is printed)."""
    from reconcile.engine import verbs
    from reconcile.engine.status import StackSpec, UnreadableSpec, recorded_specs, report
    from specs.loader import load_path

    unreadable: dict[str, UnreadableSpec] = {}
    if path is not None:
        specs = {f.stack.name: StackSpec(f.stack, str(f.path)) for f in load_path(path)}
    else:
        specs, unreadable = recorded_specs(session)
    observed = session.observe(usage_of=frozenset(specs) if path is not None else None)
    names = set(specs) if path is not None else verbs.known_stacks(session, observed)
    return report(session, observed, sorted(names), specs, unreadable)


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from specs.model import Stack

    _print_json(Stack.model_json_schema())
    return EXIT_OK


def _quiet(event: PullEvent) -> None:
    pass


def _pull_progress(stream: TextIO, as_json: bool) -> Callable[[PullEvent], None]:
    """One line per blob fetched and per layer unpacked (or found already there)."""
    def show(event: PullEvent) -> None:
        if as_json:
            stream.write(json.dumps({"event": event.kind, "image": event.image, "digest": event.digest,
                                     "status": "exists" if event.done_before else "done"}) + "\n")
        else:
            what = "blob" if event.kind == "blob" else "layer"
            state = ("already here" if event.done_before else "fetched") if event.kind == "blob" else (
                "already unpacked" if event.done_before else "unpacked")
            stream.write(f"{event.image}: {what} {event.digest[:19]} {state}\n")
        stream.flush()
    return show


def cmd_image(args: argparse.Namespace, settings: Settings) -> int:
    from reconcile.engine import images

    as_json = args.output == "json"
    if args.image_verb == "pull":
        image = images.pull(args.reference, settings, _pull_progress(sys.stdout, as_json))
        if as_json:  # JSON lines, as the events before it
            print(json.dumps({"event": "pulled", "image": image.reference, "digest": image.digest}))
        else:
            print(f"{image.reference}: pulled {image.digest}")
    elif args.image_verb == "ls":
        from reconcile.engine import render

        rows = images.listing(settings)
        if as_json:
            _print_json([{"image": r.image.reference, "digest": r.image.digest, "size": r.image.size,
                          "layers": len(r.image.layers), "used_by": list(r.used_by)} for r in rows])
        else:
            render.emit(render.format_images(rows))
    else:
        removed = images.remove(args.reference, settings) if args.image_verb == "rm" else images.prune(settings)
        if as_json:
            _print_json({"removed": [{"image": i.reference, "digest": i.digest} for i in removed]})
        else:
            print("\n".join(f"removed {i.reference} ({i.digest})" for i in removed) or "nothing to remove")
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    from reconcile.engine import containers

    found = containers.find(settings, args.name)
    chunks = containers.read_log(found, args.follow, args.tail)
    if args.output == "json":  # JSON lines: one object per line of output, as it comes
        name = f"{found.paths.root.parent.name}/{found.paths.root.name}"
        for line in containers.log_lines(chunks):
            print(json.dumps({"container": name, "line": line}), flush=True)
        return EXIT_OK
    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(chunk)
        out.flush()
    return EXIT_OK


def cmd_exec(args: argparse.Namespace, settings: Settings) -> int:
    from reconcile.engine import containers

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise containers.UnknownContainer("usage: reconcile exec NAME -- COMMAND [ARG...]")
    return containers.run_exec(settings, containers.find(settings, args.name, recorded=True), argv)


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from reconcile.watch.agent import WatchOptions
    from reconcile.watch.restarts import Backoff
    from reconcile.watch.run import AgentError, run

    backoff = Backoff(args.restart_backoff, args.restart_backoff_max, args.restart_stable)
    try:
        return run(settings, WatchOptions(args.directory, args.prune, args.resync, args.debounce, backoff,
                                          args.metrics_addr or None))  # empty: not served
    except AgentError as exc:  # imported with the agent, not by every command: reported here
        _report_errors([f"error: {exc}"], args.output == "json", "failed", "watch")
        return EXIT_ERROR


ENGINES = {"validate": "specs.loader", "convert": "specs.loader", "schema": "specs.model",
           "image": "reconcile.engine.images", "diff": "reconcile.engine.verbs",
           "apply": "reconcile.engine.verbs", "down": "reconcile.engine.verbs", "status": "reconcile.engine.status",
           "logs": "reconcile.engine.containers", "exec": "reconcile.engine.containers", "watch": "reconcile.watch.run"}
"""The bulk of what a verb imports, imported before the collector is frozen."""
COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "validate": cmd_validate, "diff": cmd_diff, "apply": cmd_apply, "down": cmd_down,
    "status": cmd_status, "schema": cmd_schema, "logs": cmd_logs, "exec": cmd_exec,
    "watch": cmd_watch, "image": cmd_image, "convert": cmd_convert,
}
PULLING = frozenset({"apply", "image"})
"""Verbs that download image layers in this process, hashing them as they come: with OpenSSL's
sha256, ~5x Python's own. The others hash only names and manifests and leave OpenSSL unloaded
(kernel.memory), 3.5 MiB less resident (a `diff` of the example stack peaked at 40.5 MiB
against 44.0); the watch agent pulls in processes of their own (`image pull`)."""
OFFLINE = frozenset({"validate", "convert", "schema"})
"""Verbs that read only their input: no state dir, cgroup, pool or backend of the host, so a
bad RECONCILE_* variable cannot stop them (they run with the defaults, which they never read)."""


def _report_errors(lines: Sequence[str], as_json: bool, kind: str, verb: str | None,
                   more: Mapping[str, object] | None = None) -> None:
    """JSON on stdout (and the lines on stderr, for people), with `more` fields; `watch -o json`
    prints nothing on stdout: its errors are lines of the agent's own stream, one JSON object
    each."""
    if as_json and verb == "watch":
        from reconcile.watch.actionlog import ActionLog

        log = ActionLog(sys.stderr)  # as it is now (redirected by a test or the CLI worker)
        for line in lines:
            log.emit("error", kind=kind, error=line.removeprefix("error: "))
        return
    if as_json:
        _print_json({"error": kind, "messages": list(lines), **(more or {})})
    for line in lines:
        print(line, file=sys.stderr)


def _json_requested(argv: Sequence[str]) -> bool:
    """-o json in a command line argparse rejected (options end at `--`)."""
    words = list(argv[:argv.index("--")] if "--" in argv else argv)
    return any(w in ("-ojson", "--output=json") or (w in ("-o", "--output") and words[i + 1:i + 2] == ["json"])
               for i, w in enumerate(words))


def _usage_error(exc: UsageError, argv: Sequence[str]) -> int:
    message = f"{exc.prog}: error: {exc}"
    if _json_requested(argv):
        _report_errors([message], True, "usage", exc.prog.removeprefix("reconcile").strip() or None)
    else:
        sys.stderr.write(exc.usage + message + "\n")
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """The whole run: a Ctrl-C at any moment (the verb's engine takes ~0.2 s to import) ends it
    with 130 and no traceback, and a reader gone (`reconcile status | head`) quietly with 1,
    whatever was printing then, an error's report included. Text the output's encoding cannot
    hold (an arrow of the plan, a name beyond ASCII under `PYTHONIOENCODING=ascii`) is written
    escaped (`\\u2192`), as Python writes stderr: a run must not fail after its work is done
    only because of how it reports it."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")
    try:
        code = _run(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, not at the interpreter's exit, where a broken pipe is a traceback
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Keep the interpreter from failing again while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _run(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        gc.freeze()
        return _usage_error(exc, argv)
    if args.verb not in PULLING and not getattr(args, "metrics_addr", None):  # the metrics' client loads ssl
        from kernel.memory import leave_openssl_unloaded

        leave_openssl_unloaded()  # before the verb's modules import hashlib
    if args.verb in ENGINES:
        importlib.import_module(ENGINES[args.verb])
    # Everything imported so far lives as long as the process: out of the collector's sight,
    # collections stay cheap and the interpreter's exit does not walk it (~60 ms per run).
    gc.freeze()
    args.output = getattr(args, "output", "text")
    debug = getattr(args, "debug", False)
    as_json = args.output == "json"
    try:
        settings = _settings(args)
    except SettingsError as exc:
        return _usage_error(UsageError(f"reconcile {args.verb}", "", str(exc)), argv)
    try:
        return COMMANDS[args.verb](args, settings)
    except BrokenPipeError:
        raise  # the reader went away: nothing to report, and nowhere to (main)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        _report_failure(exc, as_json, debug, args.verb)
    except KeyboardInterrupt as exc:
        _report_interrupted(exc, as_json)
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _report_interrupted(exc: KeyboardInterrupt, as_json: bool) -> None:
    """What an apply or down Ctrl-C stopped had made (verbs.Interrupted), as a failure's is
    told: nothing for an interruption elsewhere (a diff, a read)."""
    from reconcile.engine import render
    from reconcile.engine.verbs import Interrupted

    if not isinstance(exc, Interrupted):
        return
    if as_json:
        _print_json({**render.stopped_json(exc.applied), "interrupted": True})
    else:
        render.emit(render.format_failed(exc.applied, render.use_colour(sys.stdout), interrupted=True))


def _report_failure(exc: Exception, as_json: bool, debug: bool, verb: str) -> None:
    """The error; after what the run changed before it, where it did (verbs.PartlyApplied)."""
    from reconcile.engine import render
    from reconcile.engine.verbs import PartlyApplied

    if not isinstance(exc, PartlyApplied):
        kind, lines = _failure(exc, debug)
        _report_errors(lines, as_json, kind, verb)
        return
    kind, lines = _failure(exc.cause, debug)
    if as_json:
        _report_errors(lines, True, kind, verb, render.stopped_json(exc.applied))
        return
    render.emit(render.format_failed(exc.applied, render.use_colour(sys.stdout)))
    _report_errors(lines, False, kind, verb)


def _settings(args: argparse.Namespace) -> Settings:
    """The host's settings, from the flags and the environment (SettingsError: a bad variable)."""
    if args.verb in OFFLINE:
        return Settings(Path(DEFAULT_STATE_DIR), DEFAULT_CGROUP_PARENT)
    return Settings.resolve(getattr(args, "state_dir", None), getattr(args, "cgroup_parent", None),
                            getattr(args, "subnet_pool", None), getattr(args, "firewall_backend", None))


def _failure(exc: Exception, debug: bool) -> tuple[str, list[str]]:
    """(kind, lines) a failed verb reports: a typed error as its lines, anything else as one
    line (with the traceback under --debug)."""
    from controllers.errors import ApplyErrors
    from kernel.runtime import StartError
    from reconcile.engine.containers import UnknownContainer
    from reconcile.engine.session import NotConverged
    from reconcile.engine.verbs import InvalidStackFiles
    from specs.errors import SpecErrors
    from state.images import ImageError

    if isinstance(exc, InvalidStackFiles):
        return "invalid spec", [*(str(e) for e in exc.errors), exc.hint]
    if isinstance(exc, SpecErrors):
        return "invalid spec", [str(e) for e in exc.errors]
    if isinstance(exc, ApplyErrors):
        return "apply failed", [f"error: {e}" for e in exc.errors]
    if isinstance(exc, (NotConverged, UnknownContainer, StartError, ImageError)):
        return "failed", [f"error: {exc}"]
    if debug:
        traceback.print_exc()
    # A message alone says enough (`error: [Errno 28] No space left on device`), but some
    # exceptions carry none: then their type is all there is to say.
    message = str(exc)
    return "internal", [f"error: {type(exc).__name__}: {message}" if debug and message
                        else f"error: {message or type(exc).__name__}"]
