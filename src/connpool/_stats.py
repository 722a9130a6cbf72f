"""``PoolStats``: a snapshot of a pool's state and counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PoolStats"]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A consistent snapshot of one pool, taken by ``pool.stats()``.

    Gauges: ``size`` (open connections) ``== idle + in_use``; ``waiting``
    callers; ``connecting`` (connections being opened, not in ``size``).
    Counters since the pool was created: ``acquired``, ``timeouts``,
    ``connects``, ``connect_errors``, ``closed``, ``discarded``, ``leaks``.
    Times in milliseconds over the most recent checkouts: ``wait_*`` (time
    ``acquire`` waited), ``use_*`` (time a connection was held),
    ``connect_p50`` (time to open one).
    """

    name: str | None
    backend: str
    min_size: int
    max_size: int
    size: int
    idle: int
    in_use: int
    waiting: int
    connecting: int
    acquired: int
    timeouts: int
    connects: int
    connect_errors: int
    closed: int
    discarded: int
    leaks: int
    wait_p50: float
    wait_p99: float
    wait_max: float
    use_p50: float
    use_p99: float
    connect_p50: float

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a JSON-serializable dict."""
        return asdict(self)
