"""The queue's overflow on its way to disk: when MAX_QUEUE_SIZE messages already wait, new
ones are deferred to the spool instead of dropped.

The request thread only appends to a small handoff deque (no disk, no JSON, no lock it
could wait on behind SQLite); a writer thread, started on the first overflow and ended
when idle, builds the messages and stores them in one transaction per burst, claimed by
this process (``store.claim_mark``) so that its primary sender drains them, oldest first,
once it has caught up with the live queue. The handoff is bounded too: should the disk
fall behind by more than it holds, the excess is dropped, counted and logged.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING

from .messages import Queued
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


class Overflow:
    """A pipeline's deferred messages between the request thread and the disk."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        s = delivery.settings
        self.limit = max(s.flush_at * 10, s.max_queue_size // 10)
        self.handoff: collections.deque[Queued] = collections.deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, item: Queued) -> bool:
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
                    self.write(self.take(WRITE_AT_MOST))
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

    def take(self, limit: int) -> list[Queued]:
        items: list[Queued] = []
        while len(items) < limit:
            try:
                items.append(self.handoff.popleft())
            except IndexError:
                break
        return items

    def take_all(self) -> list[Queued]:
        return self.take(len(self.handoff) + 1)

    def write(self, items: list[Queued]) -> None:
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
        with d.disk_lock:
            try:
                d.store.insert(ready, DEFERRED, claimed=True)
            except Exception as exc:
                log.error("segment: %d message(s) could not be deferred to the spool: %s", len(ready), exc)
                d.count("failed", len(ready))
                return
            d.deferred_written(len(ready))
        d.bound_disk(ready)
