"""A pipeline's accounting: where each queued message went, and when all have settled.

Every message a pipeline takes is counted ``queued`` once and, when it leaves memory, once
more under the key of where it went, so that ``queued == delivered + stored + failed +
dropped + spooled + blocked + deferred + pending`` always holds (``retried`` only counts,
and so does ``limited``: events the collection routes refused over COLLECT_RATE_LIMIT,
never taken).
``flush()`` waits here for ``pending`` to reach zero. Drops and spools are logged once per
burst, with the count, never once per message.
"""

from __future__ import annotations

import logging
import os
import threading

import orjson

from .logs import Burst

__all__ = ["SPOOL_LOG", "STAT_KEYS", "Ledger"]

log = logging.getLogger("segment_middleware")

SPOOL_LOG = "segment: %d message(s) not delivered (%s); kept in %s for `segment-middleware replay`"
# ``deferred`` is a gauge: this process's messages on disk, waiting for its sender.
STAT_KEYS = (
    "queued",
    "delivered",
    "stored",
    "failed",
    "dropped",
    "spooled",
    "retried",
    "blocked",
    "deferred",
    "limited",
)
_ONLY_COUNTED = frozenset(("retried", "limited"))  # not messages the pipeline took


class Ledger:
    """The counts of one pipeline in one process (a forked child starts a new one)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(STAT_KEYS, 0)
        self._pending = 0
        # Re-entrant: an exit-signal handler may flush on a thread interrupted inside queued().
        self._lock = threading.RLock()
        self._idle = threading.Condition(threading.Lock())
        self.drop_log = Burst(logging.WARNING, "segment: dropped %d message(s): %s")
        self.spool_log = Burst(logging.WARNING, SPOOL_LOG)

    def queued(self) -> None:
        """One more message taken (request path: a lock and two additions)."""
        with self._lock:
            self.counts["queued"] += 1
            self._pending += 1

    def count(self, key: str, n: int) -> None:
        """``n`` messages left memory as ``key`` (``retried`` and ``limited`` only count)."""
        with self._lock:
            self.counts[key] += n
            if key not in _ONLY_COUNTED:
                self._pending -= n
        if self._pending <= 0:
            with self._idle:
                self._idle.notify_all()

    def dropped(self, n: int, reason: str) -> None:
        """Count a drop, and log it once per burst."""
        self.drop_log.note(n, reason)  # first: flush() returning means the line is out
        self.count("dropped", n)

    def moved(self, n: int, key: str) -> None:
        """``n`` deferred messages (on disk, not pending) left the disk as ``key``."""
        if n:
            with self._lock:
                self.counts["deferred"] -= n
                self.counts[key] += n

    @property
    def pending(self) -> int:
        """Messages in memory and not yet settled."""
        return self._pending

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the pending count to reach zero (or for a wake-up)."""
        with self._idle:
            if self._pending > 0:
                self._idle.wait(seconds)

    def wake_waiters(self) -> None:
        with self._idle:
            self._idle.notify_all()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def tick(self, *, force: bool = False) -> None:
        """Close the once-per-burst log lines whose burst is over (all of them: ``force``)."""
        self.drop_log.tick(force=force)
        self.spool_log.tick(force=force)

    def log_totals(self) -> None:
        """The last word of a process on this pipeline, at exit."""
        if self.counts["queued"]:
            totals = orjson.dumps(self.stats()).decode()
            log.info("segment: stats at exit (pid %d): %s", os.getpid(), totals)
