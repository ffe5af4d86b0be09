"""COLLECT_RATE_LIMIT: a token bucket per visitor, in one process.

The collection routes take events from the open internet, so one visitor (a script in a
loop, a page stuck re-sending) must not be able to fill the delivery queue for everyone.
Each visitor key (its anonymousId, else its address) has a bucket of ``burst`` tokens that
refills at ``rate`` tokens a second; an event takes one. The buckets live in this process
only (no shared store to call on the request path): with N workers a visitor may get up to
N times the rate, which is what "generous" means here.

Memory is bounded: at most ``max_keys`` buckets, the least recently used forgotten first
(a forgotten visitor starts again with a full bucket, the same as a new one).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "DEFAULT_IP_RATE_LIMIT",
    "DEFAULT_RATE_LIMIT",
    "Rate",
    "TokenBuckets",
    "parse_ip_rate_limit",
    "parse_rate_limit",
]

#: A visitor's sustained 20 events a second with bursts of 200 (a batch of retries after a
#: page was offline): far above what a person's browsing makes, far below a flood.
DEFAULT_RATE_LIMIT = "20/s burst 200"
#: An address's limit, as a multiple of a visitor's: room for an office or a mobile
#: carrier's NAT full of visitors, while a client that invents a new anonymousId for every
#: post (no cookie) cannot multiply its budget without end.
DEFAULT_IP_RATE_LIMIT = "10x"
_MULTIPLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*$")

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_FORM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*(?:burst\s+(\d+))?\s*$")


class Rate(NamedTuple):
    """Tokens a second, and the bucket's size."""

    per_second: float
    burst: int


def parse_rate_limit(value: object) -> Rate | None:
    """``"20/s"``, ``"600/m burst 100"``, ``"10/h"`` as a :class:`Rate`; None, False or ""
    turn the limit off. Without ``burst`` the bucket holds one second's worth (at least 1).
    ValueError (its message says the accepted forms) for anything else."""
    if value is None or value is False or value == "":
        return None
    if isinstance(value, Rate):
        return value
    match = _FORM.match(value) if isinstance(value, str) else None
    if match is None or match[2] not in _UNITS:
        raise ValueError(f"must be like '20/s', '600/m burst 100' or None (off), got {value!r}")
    per_second = float(match[1]) / _UNITS[match[2]]
    burst = int(match[3]) if match[3] else max(1, math.ceil(per_second))
    if per_second <= 0 or burst < 1:
        raise ValueError(f"the rate and the burst must be above zero, got {value!r}")
    return Rate(per_second, burst)


def parse_ip_rate_limit(value: object, visitor: Rate | None) -> Rate | None:
    """COLLECT_IP_RATE_LIMIT: a rate as :func:`parse_rate_limit` reads it, or ``"10x"``, that
    many times the visitor's ``visitor`` (rate and burst; off when the visitor's is off).
    ValueError for anything else."""
    match = _MULTIPLE.match(value) if isinstance(value, str) else None
    if match is None:
        return parse_rate_limit(value)
    factor = float(match[1])
    if factor <= 0:
        raise ValueError(f"the multiple must be above zero, got {value!r}")
    if visitor is None:
        return None
    return Rate(visitor.per_second * factor, max(1, math.ceil(visitor.burst * factor)))


class TokenBuckets:
    """One bucket per key; thread-safe (gthread workers share it)."""

    def __init__(
        self, rate: Rate, max_keys: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, n: int = 1) -> float:
        """Take ``n`` tokens (at most the bucket's size: a batch larger than the burst still
        passes once the bucket is full). Returns 0.0 when taken, else the seconds until
        there would be enough; nothing is taken then."""
        per_second, burst = self.rate
        n = min(max(n, 1), burst)
        now = self._clock()
        with self._lock:
            found = self._buckets.pop(key, None)
            tokens = (
                float(burst) if found is None else min(float(burst), found[0] + (now - found[1]) * per_second)
            )
            wait = 0.0
            if tokens >= n:
                tokens -= n
            else:
                wait = (n - tokens) / per_second
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait
