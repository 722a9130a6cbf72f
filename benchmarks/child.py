"""Entry point of one runtime's benchmark process (started by ``run.py``; usable by hand).

    python benchmarks/child.py RUNTIME --json-out FILE [--duration S] [--warmup S]
                               [--workload NAME ...] [--only SUBSTRING ...]

For gevent and eventlet the very first thing this process does is monkey-patch, before
anything else is imported, since that is how their users run (PyMongo's green test runner
does the same). Only then is the runtime's module (``pools_<runtime>.py``) imported; it
provides a kit and a line-up of pools, and ``sync_bench`` / ``async_bench`` measure them.
The records go to FILE as JSON, progress to stderr.
"""

import sys

RUNTIME_DISTRIBUTIONS: dict[str, list[str]] = {
    "threading": [],
    "asyncio": [],
    "gevent": ["gevent", "greenlet"],
    "eventlet": ["eventlet", "greenlet"],
    "trio": ["trio"],
}

if __name__ == "__main__":
    RUNTIME = sys.argv[1] if len(sys.argv) > 1 else ""
    if RUNTIME == "gevent":
        from gevent import monkey

        monkey.patch_all()
    elif RUNTIME == "eventlet":
        import warnings

        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        import eventlet

        eventlet.monkey_patch()


def _find_connpool() -> str | None:
    """Where connpool will be imported from: the installed package, or else the checkout's
    ``src`` (so the suite also runs from a checkout where connpool is not installed)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("connpool")
    if spec is None:
        src = Path(__file__).resolve().parent.parent / "src"
        if (src / "connpool").is_dir():
            sys.path.insert(1, str(src))
            spec = importlib.util.find_spec("connpool")
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).parent)


def main(argv: list[str]) -> int:
    import argparse
    import importlib
    import json
    import os

    from bench_common import WORKLOADS, Settings, log, versions

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runtime", choices=["threading", "gevent", "eventlet", "asyncio", "trio"])
    parser.add_argument("--json-out", required=True)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--workload", action="append", choices=WORKLOADS)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    settings = Settings(
        duration=args.duration,
        warmup=args.warmup,
        workloads=tuple(args.workload or WORKLOADS),
        only=tuple(args.only),
        repeat=args.repeat,
    )
    connpool_from = _find_connpool()
    load_before = os.getloadavg()[0]
    module = importlib.import_module(f"pools_{args.runtime}")
    log(f"[{args.runtime}] {len(module.POOLS)} pools, {settings.duration}s per measurement")
    if args.runtime in ("asyncio", "trio"):
        import async_bench

        records = async_bench.run_runtime(module.KIT, module.POOLS, settings)
    else:
        import sync_bench

        records = sync_bench.run_runtime(module.KIT, module.POOLS, settings)
    payload = {
        "runtime": args.runtime,
        "workers": module.KIT.workers,
        "versions": versions(
            RUNTIME_DISTRIBUTIONS[args.runtime] + [d for spec in module.POOLS for d in spec.dists]
        ),
        "connpool_from": connpool_from,
        "load_average": [load_before, os.getloadavg()[0]],
        "results": records,
    }
    with open(args.json_out, "w", encoding="utf-8") as out:
        json.dump(payload, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
