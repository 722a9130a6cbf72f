"""How soon a pool serves again after its server comes back, per backend.

    python tests/faults/measure_recovery.py                   # every installed backend, K=7
    python tests/faults/measure_recovery.py --backoff-max 0.2 # with the scenario tests' short backoff
    python tests/faults/measure_recovery.py --backends trio,gevent -k 3 --outage 1.0

Each backend runs in a subprocess of its own (gevent and eventlet are not
monkey-patched, as with ``CONNPOOL_TEST_BACKENDS=gevent``).  There a pool
(``min_size=1``, ``max_size=4``, checks at every checkout) serves
``--workers`` tasks looping acquire + echo round trip + release through a
:class:`FaultProxy` in front of an :class:`EchoServer`.  ``-k`` times: the
server goes down (by default ``proxy``: its address refuses connects and every
connection is reset, as when a server process dies; ``server``: the echo
server behind the proxy stops, so connects still reach the proxy and are
reset there), stays down ``--outage`` seconds after every worker has seen an
error, and comes back.  Measured from the moment it is back: ``first``, the
first successful acquire + round trip; ``all``, until every worker has
succeeded again.  Afterwards the "nothing lost" check of the scenario tests
runs on the pool.

The pool's reconnect backoff is its default (``Core``: 0.05 s doubling per
consecutive failed connect, capped at 5 s, jittered down to half) unless
``--backoff-max`` (and ``--backoff-initial``) say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
BACKENDS = ("threading", "gevent", "eventlet", "asyncio", "trio")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: all)")
    parser.add_argument("-k", type=int, default=7, help="restarts per backend (default 7)")
    parser.add_argument("--outage", type=float, default=0.5, help="seconds down after every worker failed")
    parser.add_argument("--outage-kind", choices=("proxy", "server"), default="proxy")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--backoff-initial", type=float, default=None, help="default: the pool's (0.05)")
    parser.add_argument("--backoff-max", type=float, default=None, help="default: the pool's (5.0)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------ the child


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one backend in this process; returns the raw results."""
    if args.child in ("asyncio", "trio"):
        import anyio

        result: dict[str, Any] = anyio.run(_measure_async, args, backend=args.child)
        return result
    return _measure_sync(args)


def _configure(pool: Any, args: argparse.Namespace) -> float:
    from faults.scenario_helpers import backoff_max_of, configure_backoff

    core = pool._core
    if args.backoff_initial is not None or args.backoff_max is not None:
        configure_backoff(
            pool,
            core.backoff_initial if args.backoff_initial is None else args.backoff_initial,
            core.backoff_max if args.backoff_max is None else args.backoff_max,
        )
    return backoff_max_of(pool)


def _measure_sync(args: argparse.Namespace) -> dict[str, Any]:
    from connpool import Pool
    from connpool.backends import get_backend
    from faults._originals import wait_until
    from faults.echo import EchoServer
    from faults.proxy import FaultProxy
    from faults.scenario_helpers import (
        ACQUIRE_TIMEOUT,
        CONNECT_TIMEOUT,
        LONG,
        ConnectLog,
        Recovery,
        SyncLoad,
        TrackingConnector,
        check_nothing_lost,
        outage_begin,
        outage_end,
    )

    name = args.child
    sched: Any = get_backend(name)
    firsts: list[float] = []
    alls: list[float] = []
    with EchoServer() as echo, FaultProxy(*echo.address) as proxy:
        log = ConnectLog()
        connector = TrackingConnector(proxy.address, log, timeout=CONNECT_TIMEOUT, backend=name)
        pool: Any = Pool(
            connector, backend=name, min_size=1, max_size=4, check_after=0, connect_timeout=CONNECT_TIMEOUT
        )
        backoff_max = _configure(pool, args)
        with pool:
            load = SyncLoad(pool, workers=args.workers, acquire_timeout=ACQUIRE_TIMEOUT)
            load.start(sched)
            try:
                since = time.monotonic()
                assert wait_until(lambda: load.all_succeeded_since(since), LONG, sched.sleep), "no warm-up"
                for _ in range(args.k):
                    down = time.monotonic()
                    outage_begin(args.outage_kind, echo, proxy)
                    assert wait_until(lambda: load.all_failed_since(down), LONG, sched.sleep), "no outage"
                    sched.sleep(args.outage)  # the outage lasts this long: that is what is measured
                    recovery = load.recovery = Recovery()
                    recovery.start()
                    outage_end(args.outage_kind, echo, proxy)
                    bound = backoff_max + LONG
                    assert wait_until(
                        lambda: load.all_succeeded_since(recovery.started), bound, sched.sleep
                    ), f"not recovered within {bound} s"
                    firsts.append(recovery.seconds)
                    alls.append(_all_workers(load, recovery.started))
            finally:
                load.stop(sched.sleep)
            assert not load.tally.unexpected, load.tally.unexpected
            check_nothing_lost(pool, log, proxy, echo, sched.sleep)
    return {"backend": name, "backoff_max": backoff_max, "first": firsts, "all": alls}


async def _measure_async(args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from connpool import AsyncPool
    from faults._originals import wait_until_async
    from faults.echo import EchoServer
    from faults.proxy import FaultProxy
    from faults.scenario_helpers import (
        ACQUIRE_TIMEOUT,
        CONNECT_TIMEOUT,
        LONG,
        AsyncLoad,
        AsyncTrackingConnector,
        ConnectLog,
        Recovery,
        acheck_nothing_lost,
        outage_begin,
        outage_end,
    )

    name = args.child
    firsts: list[float] = []
    alls: list[float] = []
    with EchoServer() as echo, FaultProxy(*echo.address) as proxy:
        log = ConnectLog()
        connector = AsyncTrackingConnector(proxy.address, log, timeout=CONNECT_TIMEOUT)
        pool: Any = AsyncPool(
            connector, backend=name, min_size=1, max_size=4, check_after=0, connect_timeout=CONNECT_TIMEOUT
        )
        backoff_max = _configure(pool, args)
        async with pool:
            load = AsyncLoad(pool, workers=args.workers, acquire_timeout=ACQUIRE_TIMEOUT)
            async with anyio.create_task_group() as tg:
                load.start(tg)
                try:
                    since = time.monotonic()
                    assert await wait_until_async(lambda: load.all_succeeded_since(since), LONG, None)
                    for _ in range(args.k):
                        down = time.monotonic()
                        outage_begin(args.outage_kind, echo, proxy)
                        assert await wait_until_async(lambda: load.all_failed_since(down), LONG, None)
                        await anyio.sleep(args.outage)
                        recovery = load.recovery = Recovery()
                        recovery.start()
                        outage_end(args.outage_kind, echo, proxy)
                        bound = backoff_max + LONG
                        assert await wait_until_async(
                            lambda: load.all_succeeded_since(recovery.started),
                            bound,
                            None,
                        ), f"not recovered within {bound} s"
                        firsts.append(recovery.seconds)
                        alls.append(_all_workers(load, recovery.started))
                finally:
                    await load.stop()
            assert not load.tally.unexpected, load.tally.unexpected
            await acheck_nothing_lost(pool, log, proxy, echo)
    return {"backend": name, "backoff_max": backoff_max, "first": firsts, "all": alls}


def _all_workers(load: Any, since: float) -> float:
    """Seconds from ``since`` until the last worker's first success after it."""
    return float(max(min(t for t in times if t >= since) for times in load.successes)) - since


# ------------------------------------------------------------------ the parent


def run_backend(name: str, argv: list[str]) -> dict[str, Any] | str:
    """Run the child for ``name``; its results, or the reason it failed."""
    env = dict(os.environ, CONNPOOL_TEST_BACKENDS=name)
    env.pop("CONNPOOL_MONKEY_PATCHED", None)
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", name]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        return f"exit status {done.returncode}:\n    " + "\n    ".join(tail)
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str]) -> int:
    args = parse(argv)
    sys.path.insert(0, str(TESTS))  # the fault toolkit is the package ``faults`` under tests/
    if args.child:
        print(json.dumps(child(args)))
        return 0
    from faults.scenario_helpers import summarize

    names = [name.strip() for name in args.backends.split(",") if name.strip()]
    child_argv = [arg for arg in argv if arg != "--json"]
    print(
        f"recovery after a server restart under load: K={args.k} restarts per backend, "
        f"outage {args.outage:.2f} s ({args.outage_kind}), {args.workers} workers, max_size=4"
    )
    header = f"{'backend':<10} {'backoff_max':>11}  {'first served: median':>20} {'min':>7} {'max':>7}"
    header += f"   {'all workers: median':>19} {'max':>7}"
    print(header)
    print("-" * len(header))
    results = []
    failed = False
    for name in names:
        result = run_backend(name, child_argv)
        if isinstance(result, str):
            failed = True
            print(f"{name:<10} FAILED {result}")
            continue
        results.append(result)
        first, every = summarize(result["first"]), summarize(result["all"])
        print(
            f"{name:<10} {result['backoff_max']:>10.2f}s  {first['median']:>19.3f}s {first['min']:>6.3f}s "
            f"{first['max']:>6.3f}s   {every['median']:>18.3f}s {every['max']:>6.3f}s"
        )
    if args.json:
        print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
