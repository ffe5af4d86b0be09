"""The disk side of a pipeline: the queue's overflow (deferred rows) from the request thread
to the spool and back to the sender, and the bound on the spool (SPOOL_MAX_MB).

When MAX_QUEUE_SIZE messages already wait, new ones are deferred to the spool instead of
dropped.

The request thread only appends to a small handoff deque (no disk, no JSON, no lock it
could wait on behind SQLite); a writer thread, started on the first overflow and ended
when idle, builds the messages and stores them in one transaction per burst, claimed by
this process (its ``claims.token``) so that its primary sender drains them, oldest first,
once it has caught up with the live queue. The handoff is bounded too: should the disk
fall behind by more than it holds, the excess is dropped, counted and logged.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING

from .logs import Burst
from .messages import Encoded, Packed, take
from .replay import ReplayResult
from .store import DEFERRED

if TYPE_CHECKING:
    from .delivery import Delivery

__all__ = ["Overflow"]

log = logging.getLogger("segment_middleware")

GATHER = 0.02  # seconds the writer lets a burst gather before one transaction takes it
IDLE_EXIT = 5.0  # seconds without overflow before the writer thread ends
# Messages per transaction: few statements (each hands the GIL back and must win it again),
# and a bounded peak of messages built at once.
WRITE_AT_MOST = 256
DEFER_LOG = "segment: deferred %d message(s) to %s (queue full: MAX_QUEUE_SIZE); the sender sends them"


class Overflow:
    """A pipeline's deferred messages: the handoff, the writer, the rows it holds on disk."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        s = delivery.settings
        self.limit = max(s.flush_at * 10, s.max_queue_size // 10)
        self.handoff: collections.deque[Packed] = collections.deque()
        self.held = 0  # deferred rows this process holds (claimed) on disk: its sender's to send
        self.burst = Burst(logging.WARNING, DEFER_LOG)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # ``held`` and the rows it counts change together under it (re-entrant: a reconcile
        # or an eviction counts what it moved while holding it).
        self._disk_lock = threading.RLock()
        self._unchecked = 0  # bytes this process wrote to the spool since it last measured it

    def add(self, item: Packed) -> bool:
        """Take a message the full queue could not (request path); False when the
        handoff is full too."""
        if len(self.handoff) >= self.limit:
            return False
        self.handoff.append(item)
        if not self._wake.is_set():
            self._wake.set()
        if self._thread is None:
            self._start()
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="segment-overflow", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: shutdown() writes what is left
                return
            self._thread = thread

    def _run(self) -> None:
        while True:
            if not self._wake.wait(IDLE_EXIT) and self._retire():
                return
            if len(self.handoff) < self.delivery.settings.flush_at:
                self.delivery.abort.wait(GATHER)  # a trickle: gather it into one transaction
            self._wake.clear()
            try:
                while self.handoff:
                    self.write(take(self.handoff, WRITE_AT_MOST))
            except Exception:  # never let the writer die with messages in its hands
                log.exception("segment: overflow writer error")

    def _retire(self) -> bool:
        """End this idle writer, unless a message came in meanwhile: an add() that still
        saw this thread alive appended before the handoff is looked at here."""
        with self._lock:
            self._thread = None
        if not self.handoff:
            return True
        with self._lock:
            if self._thread is not None:  # add() started a successor
                return True
            self._thread = threading.current_thread()
            return False

    def write(self, items: list[Packed]) -> None:
        """Store a burst: deferred rows with a write key, the local store without one."""
        d = self.delivery
        if not items:
            return
        d.more_senders()  # the queue is full: if every sender is stuck on the endpoint, one more
        ready = d.prepare(items)
        if not ready:
            return
        if d.settings.uses_store:
            d.store_locally(ready)
            return
        with self._disk_lock:
            try:
                d.store.insert(ready, DEFERRED, claimed=True)
            except Exception as exc:
                log.error("segment: %d message(s) could not be deferred to the spool: %s", len(ready), exc)
                d.count("failed", len(ready))
                return
            self.held += len(ready)
            self.burst.note(len(ready), d.settings.local_store)
            d.count("deferred", len(ready))
        self.bound_disk(ready)

    # ------------------------------------------------------------------ rows on disk
    def _moved(self, n: int, key: str) -> None:
        """``n`` held rows left the disk as ``key``."""
        if n:
            with self._disk_lock:
                self.held -= n
                self.delivery.moved(n, key)

    def drained(self, result: ReplayResult) -> None:
        """Account for a drain of the held rows. None left although some are held:
        another process evicted them past SPOOL_MAX_MB."""
        self._moved(result.sent, "delivered")
        self._moved(result.rejected, "failed")
        if not (result.sent or result.rejected or result.error):
            self._reconcile()

    def spooled(self, ids: list[int], why: str) -> None:
        """Held rows whose delivery failed for good join the spool (for `replay`)."""
        d = self.delivery
        try:
            d.store.to_spool(ids, why)
        except Exception as exc:
            log.warning("segment: could not move %d deferred message(s) to the spool: %s", len(ids), exc)
            return
        d.spool_log.note(len(ids), why, d.settings.local_store)
        self._moved(len(ids), "spooled")

    def _reconcile(self) -> None:
        with self._disk_lock:
            lost = self.held - self.delivery.store.count_mine(DEFERRED)
            if lost > 0:
                self.delivery.drop_log.note(lost, "deferred rows evicted past SPOOL_MAX_MB by another")
                self._moved(lost, "dropped")

    def bound_disk(self, batch: list[Encoded]) -> None:
        """SPOOL_MAX_MB, after this process wrote ``batch`` to disk: past it the oldest
        waiting rows go, counted as dropped (here for this process's own deferred rows; their
        owners count the others'). Only writes take the spool past the bound, so each
        process looks once per twentieth of it that it wrote."""
        d = self.delivery
        limit = int(d.settings.spool_max_mb * 1024 * 1024)
        with self._disk_lock:
            self._unchecked += sum([len(encoded.body) for encoded in batch])
            if self._unchecked < limit // 20:
                return
            self._unchecked = 0
            try:
                result = d.store.evict(limit)
            except Exception as exc:
                log.warning("segment: could not check the spool's size: %s", exc)
                return
            if result is not None and result[0]:
                evicted, own = result
                d.drop_log.note(evicted, "the spool is over SPOOL_MAX_MB; its oldest rows were evicted")
                self._moved(own, "dropped")

    def hand_over(self) -> None:
        """At exit: the held rows go to whichever process drains next (any worker of the
        app does, by itself), or to `segment-middleware replay`. They stay in this
        process's ``deferred`` count: on disk, waiting."""
        if self.held <= 0:
            return
        d = self.delivery
        try:
            self._reconcile()
            released = d.store.release_mine()
        except Exception as exc:
            log.warning("segment: could not hand over the deferred rows: %s", exc)
            return
        with self._disk_lock:
            self.held = 0
        if released:
            log.warning(
                "segment: %d deferred message(s) left in %s; the app's next process sends them"
                " (or `segment-middleware replay`)",
                released,
                d.settings.local_store,
            )
