"""The ``connpool`` command: argument parsing and the ``bench`` and ``size`` commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from ._errors import FAILURE, USAGE, CLIError
from ._report import (
    bench_table,
    check_plot_path,
    group_by_backend,
    plot_sweep,
    recommend,
    require_matplotlib,
    stats_lines,
    sweep_report,
)
from ._runner import Outcome, Plan, Progress, embedded_echo_server, run_plan
from ._targets import Target, parse_target, probe, unsupported_reason

__all__ = ["build_parser", "main"]

ALL_BACKENDS = ("threading", "gevent", "eventlet", "asyncio", "trio")
DEFAULT_SWEEP = "1,2,4,8,16,32"
MAX_PAYLOAD = 16 * 1024 * 1024
#: a progress bar is drawn when the whole command should take longer than this (seconds)
PROGRESS_AFTER = 2.0

_HIKARI = (
    "On sizing, HikariCP's 'About Pool Sizing' "
    "(https://github.com/brettwooldridge/HikariCP/wiki/About-Pool-Sizing) is the classic advice: "
    "a database wants few connections, about connections = (core_count * 2) + effective_spindle_count, "
    "and 'a small pool, saturated with threads waiting for connections' beats a large one.  "
    "The right number depends on the server and the workload: measure it, which is what "
    "this command does."
)

_DESCRIPTION = """\
connpool's command line tools.

  connpool bench   measure a pool: throughput, acquire waits, fairness, on every installed backend
  connpool size    measure several pool sizes and recommend one

Run 'connpool COMMAND --help' for the options of a command.
"""

_BENCH_DESCRIPTION = """\
Measure connpool against a server, once per backend.

By default an echo server is started in this process and every installed
backend (threading, gevent, eventlet, asyncio, trio) drives it, each in a
process of its own (gevent and eventlet monkey-patched first, as their users
run them): WORKERS threads, greenlets or tasks share a pool of SIZE
connections, and each loops for DURATION seconds: acquire a connection with
pool.connection(), send PAYLOAD bytes and read the echo (or PING, or
SELECT 1), release.  The pool is filled before the clock starts.

Reported per backend: throughput (ops/s); how long acquire waited (p50, p99,
max, ms); how long a connection was held (use p50); how long opening one took
(connect p50, from pool.stats()); fairness (Jain's index over the workers'
operation counts: 1.000 when all did the same work); the pool's stats().
"""

_SIZE_DESCRIPTION = """\
Recommend a pool size: run the bench workload at each size of --sweep (per
backend), print throughput and latency at each size, and pick the smallest
size that reaches --peak-fraction of the best throughput without its p99
latency rising above --max-p99 (default: 1.5 times the best p99 among the
sizes that reach the throughput bar).
"""

_EPILOG = f"""\
targets (--target):
  (none)             an echo server started by this command
  tcp://HOST:PORT    an echo server of yours (it must send back what it gets)
  redis://[:PASSWORD@]HOST[:PORT][/DB]
                     Redis: one PING per cycle (needs "connpool[redis]")
  postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DBNAME
                     PostgreSQL: one SELECT 1 per cycle (needs "connpool[psycopg]")
  redis-py and psycopg do not run on trio: trio is skipped for those targets.

exit status: 0 success; 1 a run failed (unreachable target, a backend's run
failed); 2 the command cannot run as asked (bad option, a backend or library
that is not installed).

{textwrap.fill(_HIKARI, 79)}
"""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _payload(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_PAYLOAD:
        raise argparse.ArgumentTypeError(f"at most {MAX_PAYLOAD} bytes, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most 1, got {text}")
    return value


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds, got {text}")
    return value


def _sizes(text: str) -> list[int]:
    sizes: list[int] = []
    for item in text.split(","):
        if not item.strip():
            continue
        size = _positive_int(item.strip())
        if size not in sizes:
            sizes.append(size)
    if not sizes:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of pool sizes such as 1,2,4,8, got {text!r}"
        )
    return sorted(sizes)


def build_parser() -> argparse.ArgumentParser:
    """The ``connpool`` argument parser."""
    from .. import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="connpool", description=_DESCRIPTION, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"connpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    common = _Parser(add_help=False)
    group = common.add_argument_group("workload")
    group.add_argument(
        "--backend",
        "-b",
        action="append",
        metavar="NAME",
        help="backend to measure: threading, gevent, eventlet, asyncio or trio; repeat the option "
        "or give a comma-separated list (default: every installed backend)",
    )
    group.add_argument(
        "--workers",
        "-w",
        type=_positive_int,
        default=50,
        metavar="N",
        help="concurrent threads, greenlets or tasks sharing the pool (default: 50)",
    )
    group.add_argument(
        "--duration",
        "-d",
        type=_seconds,
        metavar="SECONDS",
        help="length of each measurement, per backend and pool size (default: 5 for bench, 2 for size)",
    )
    group.add_argument(
        "--payload",
        type=_payload,
        default=64,
        metavar="BYTES",
        help="bytes sent and echoed back per cycle, for tcp:// targets (default: 64)",
    )
    group.add_argument(
        "--target",
        "-t",
        metavar="URL",
        help="the server to measure: tcp://HOST:PORT (an echo server), redis://..., postgresql://... "
        "(default: an echo server started by this command)",
    )
    group.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="bound on opening one connection (default: 5)",
    )
    sizing = common.add_argument_group("size recommendation (with --sweep)")
    sizing.add_argument(
        "--peak-fraction",
        type=_fraction,
        default=0.95,
        metavar="F",
        help="throughput a size must reach, as a fraction of the best size's (default: 0.95)",
    )
    sizing.add_argument(
        "--max-p99",
        type=_milliseconds,
        metavar="MS",
        help="highest acceptable p99 cycle latency in ms (default: 1.5 x the best p99 among the sizes "
        "reaching the throughput bar)",
    )
    sizing.add_argument(
        "--plot",
        metavar="FILE",
        help="draw throughput and p99 latency against pool size per backend into FILE (.png, .svg, .pdf); "
        'needs matplotlib: pip install "connpool[plot]"',
    )
    output = common.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="measure throughput, acquire waits and fairness on every installed backend",
        description=_BENCH_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    bench.set_defaults(parser=bench)
    bench.add_argument(
        "--size",
        "-s",
        type=_positive_int,
        metavar="N",
        help="pool max_size (default: 10)",
    )
    bench.add_argument(
        "--sweep",
        type=_sizes,
        metavar="SIZES",
        help="measure each of these comma-separated pool sizes (e.g. 1,2,4,8,16,32) and recommend one; "
        "the same as 'connpool size --sweep SIZES'",
    )

    size = commands.add_parser(
        "size",
        parents=[common],
        help="measure several pool sizes and recommend one",
        description=_SIZE_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    size.set_defaults(parser=size)
    size.add_argument(
        "--sweep",
        type=_sizes,
        default=_sizes(DEFAULT_SWEEP),
        metavar="SIZES",
        help=f"comma-separated pool sizes to measure (default: {DEFAULT_SWEEP})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``connpool`` command; return its exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # report it as the command's error, with the command's --help
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return _bench(args)
    except CLIError as exc:
        print(f"connpool {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"connpool {args.command}: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------ bench


def _backend_names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    names: list[str] = []
    for value in values:
        for item in value.split(","):
            name = item.strip().lower()
            if name and name not in names:
                names.append(name)
    if not names:
        raise CLIError("--backend needs a backend name", USAGE)
    return names


def _not_installed(name: str) -> str:
    """The message of the error ``get_backend`` raises for a missing runtime library."""
    from ..backends import get_backend

    try:
        get_backend(name)  # raises before importing anything when the library is missing
    except LookupError as exc:
        return str(exc)
    return f"backend {name!r} is not available"  # pragma: no cover - it was found after all


def _choose_backends(requested: list[str] | None, target: Target) -> tuple[list[str], dict[str, str]]:
    """The backends to run, and those skipped with the reason; usage errors for bad names."""
    from ..backends import available_backends

    available = available_backends()
    skipped: dict[str, str] = {}
    if requested is None:
        chosen = []
        for name in ALL_BACKENDS:
            reason = unsupported_reason(target, name)
            if name not in available:
                skipped[name] = _not_installed(name)
            elif reason is not None:
                skipped[name] = reason
            else:
                chosen.append(name)
        if not chosen:
            raise CLIError(f"no installed backend can drive {target.display}", USAGE)
        return chosen, skipped
    for name in requested:
        if name not in ALL_BACKENDS:
            raise CLIError(f"unknown backend {name!r}: choose from {', '.join(ALL_BACKENDS)}", USAGE)
        if name not in available:
            raise CLIError(_not_installed(name), USAGE)
        reason = unsupported_reason(target, name)
        if reason is not None:
            raise CLIError(f"backend {name!r} cannot drive {target.kind} targets: {reason}", USAGE)
    return requested, skipped


@contextlib.contextmanager
def _target(text: str | None) -> Iterator[Target]:
    if text is None:
        with embedded_echo_server() as target:
            yield target
    else:
        yield parse_target(text)


def _bench(args: argparse.Namespace) -> int:
    sweep: list[int] | None = args.sweep
    if args.command == "bench":
        if sweep is not None and args.size is not None:
            raise CLIError("give either --size or --sweep, not both", USAGE)
        if sweep is None and args.plot is not None:
            raise CLIError("--plot draws a sweep: add --sweep SIZES (or use 'connpool size')", USAGE)
    sizes = sweep if sweep is not None else [args.size or 10]
    if args.duration is None:
        args.duration = 5.0 if args.command == "bench" else 2.0
    # Everything that can be checked fails before anything starts.
    requested = _backend_names(args.backend)
    given = parse_target(args.target) if args.target is not None else Target("tcp", "", embedded=True)
    backends, skipped = _choose_backends(requested, given)
    if args.plot is not None:
        require_matplotlib()
        check_plot_path(args.plot)

    payload = b"x" * args.payload
    with _target(args.target) as target:
        probe(target, payload, args.connect_timeout)
        plan = Plan(
            backends=backends,
            target=target,
            sizes=sizes,
            workers=args.workers,
            duration=args.duration,
            payload=args.payload,
            connect_timeout=args.connect_timeout,
        )
        show = sys.stderr.isatty() and plan.expected_seconds() * len(backends) > PROGRESS_AFTER
        outcome = run_plan(
            plan, Progress(sys.stderr, show), check=lambda: probe(target, payload, args.connect_timeout)
        )

    groups = group_by_backend(outcome.runs)
    recommendations: dict[str, dict[str, Any] | None] = {}
    if sweep is not None:
        recommendations = {
            backend: recommend(runs, args.peak_fraction, args.max_p99) for backend, runs in groups.items()
        }
    if args.json:
        print(json.dumps(_json_report(args, plan, outcome, skipped, recommendations), indent=2))
    else:
        print(
            "\n".join(
                _text_report(
                    args,
                    plan=plan,
                    outcome=outcome,
                    skipped=skipped,
                    groups=groups,
                    recommendations=recommendations,
                )
            )
        )
    if args.plot is not None and groups:
        title = f"connpool: {plan.workers} workers, {_target_text(plan.target)}"
        plot_sweep(args.plot, groups, recommendations, title)
        if not args.json:
            print(f"plot written to {args.plot}")
    for backend, message in outcome.failed.items():
        print(f"connpool {args.command}: error: {backend}: {message}", file=sys.stderr)
    return FAILURE if outcome.failed else 0


def _target_text(target: Target) -> str:
    if target.embedded:
        return f"embedded echo server {target.host}:{target.port}"
    return target.display


def _text_report(
    args: argparse.Namespace,
    *,
    plan: Plan,
    outcome: Outcome,
    skipped: dict[str, str],
    groups: dict[str, list[dict[str, Any]]],
    recommendations: dict[str, dict[str, Any] | None],
) -> list[str]:
    payload = f", {plan.payload}-byte payload" if plan.target.kind == "tcp" else ""
    if args.sweep is None:
        lines = [
            f"connpool bench: {plan.workers} workers, pool max_size {plan.sizes[0]}, "
            f"{plan.duration:g} s per backend{payload}, target {_target_text(plan.target)}",
            "",
        ]
        lines += bench_table(outcome.runs, outcome.failed, skipped)
        lines.append("")
        lines += stats_lines(outcome.runs)
        return lines
    lines = [
        f"connpool {args.command}: {plan.workers} workers, pool sizes {','.join(map(str, plan.sizes))}, "
        f"{plan.duration:g} s per size{payload}, target {_target_text(plan.target)}",
        "",
    ]
    lines += sweep_report(groups, recommendations)
    for backend, message in outcome.failed.items():
        lines.append(f"{backend}: FAILED: {message}")
    for backend, reason in skipped.items():
        lines.append(f"{backend}: skipped: {reason}")
    return lines


def _json_report(
    args: argparse.Namespace,
    plan: Plan,
    outcome: Outcome,
    skipped: dict[str, str],
    recommendations: dict[str, dict[str, Any] | None],
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": args.command,
        "target": plan.target.display,
        "embedded_server": plan.target.embedded,
        "workers": plan.workers,
        "sizes": plan.sizes,
        "duration": plan.duration,
        "payload": plan.payload,
        "backends": plan.backends,
        "results": outcome.runs,
        "failed": [{"backend": b, "error": message} for b, message in outcome.failed.items()],
        "skipped": [{"backend": b, "reason": reason} for b, reason in skipped.items()],
    }
    if args.sweep is not None:
        report["recommendations"] = recommendations
    return report
