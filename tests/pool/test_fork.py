"""After os.fork() the child's pool starts empty, works, and never touches the parent's connections."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import signal
import sys
import time

import pytest

from connpool import AsyncPool, Pool

from .helpers import Factory

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILD_DEADLINE = 20.0


def _run_child(child) -> dict:
    """Fork; run ``child()`` in the child and return the JSON it produced.

    The parent polls for the child's exit, sleeping in between, before it
    reads the pipe: monkey-patched, that sleep lets the parent's hub run, and
    gevent's forked child only gets going once it has (a blocking read would
    stall both).  The result is far smaller than a pipe's buffer, so the
    child's write never blocks.  A child stuck for ``CHILD_DEADLINE / 2``
    prints its stack and exits; the parent gives up after ``CHILD_DEADLINE``.
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            # a hung child prints where it is stuck, and exits
            faulthandler.dump_traceback_later(CHILD_DEADLINE / 2, exit=True)
            os.close(read_fd)
            result = child()
            os.write(write_fd, json.dumps(result).encode())
        except BaseException as exc:
            os.write(write_fd, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + CHILD_DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child did not finish within {CHILD_DEADLINE} s")
        time.sleep(0.005)  # cooperative when monkey-patched
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    result = json.loads(b"".join(chunks) or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


def test_fork_child_pool_is_fresh(sched):
    factory = Factory()
    with Pool(factory, backend=sched, min_size=2, max_size=3) as pool:
        pool.wait(5)
        parent_conns = list(factory.made)
        held = pool.acquire()

        def child():
            stats = pool.stats()
            with pool.connection(timeout=5) as conn:
                new_one = conn not in parent_conns
            pool.close()
            return {
                "size_after_fork": stats.size,
                "new_connection": new_one,
                "parent_closed_in_child": [c.closed for c in parent_conns],
            }

        result = _run_child(child)
        assert result["size_after_fork"] == 0
        assert result["new_connection"] is True
        assert result["parent_closed_in_child"] == [False, False]
        # the parent is unaffected
        pool.release(held)
        assert pool.stats().size == 2
        with pool.connection(timeout=0) as conn:
            assert conn in parent_conns


def test_fork_with_asyncio_pool_not_sharing_a_loop():
    factory = Factory()
    pool = AsyncPool(factory.aconnect, backend="asyncio", min_size=1)

    async def use() -> int:
        async with pool.connection(timeout=5) as conn:
            return conn.id

    def child():
        async def main():
            conn_id = await use()
            await pool.close()
            return conn_id

        return {"conn": asyncio.run(main())}

    result = _run_child(child)
    assert "conn" in result

    async def parent():
        async with pool:
            return await use()

    assert asyncio.run(parent()) >= 1
