"""The disk side of a pipeline: it owns the store and everything written to it.

- Without a write key the local store is the destination (:meth:`Disk.store_locally`).
- A batch that failed after its retries, or was cut off by shutdown, is spooled for
  ``replay`` (:meth:`Disk.spool`).
- When MAX_QUEUE_SIZE messages already wait in memory, new ones are deferred to the spool
  instead of dropped: the request thread only appends to a small handoff deque (no disk, no
  JSON, no lock it could wait on behind SQLite); a writer thread, started on the first
  overflow and ended when idle, builds the messages and stores them in one transaction per
  burst, claimed by this process, so that its primary sender drains them, oldest first,
  once it has caught up with the live queue. The handoff is bounded too: should the disk
  fall behind by more than it holds, the caller writes it (an event loop's thread drops
  instead, counted and logged).
- Rows waiting on disk take at most SPOOL_MAX_MB; past it the oldest are evicted.

It is built with what it uses (the settings, the pipeline's ledger, the function that
builds and encodes queued calls, the pipeline's abort signal, and what to do when the
queue is full) and reaches into nothing else.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .erasure import without_erased
from .ledger import Ledger
from .logs import Burst
from .messages import Encoded, QueueItem, take
from .replay import ReplayResult
from .store import DEFERRED, LOCAL, SPOOL, Store

if TYPE_CHECKING:
    from .erasure import Subjects
    from .settings import Settings

__all__ = ["Disk"]

log = logging.getLogger("segment_middleware")

GATHER = 0.02  # seconds the writer lets a burst gather before one transaction takes it
IDLE_EXIT = 5.0  # seconds without overflow before the writer thread ends
# Messages per transaction: few statements (each hands the GIL back and must win it again),
# and a bounded peak of messages built at once.
WRITE_AT_MOST = 256
RETAIN_EVERY = 3600.0  # seconds between two LOCAL_STORE_RETENTION_DAYS passes of one process
DEFER_LOG = "segment: deferred %d message(s) to %s (queue full: MAX_QUEUE_SIZE); the sender sends them"

Build = Callable[[list[QueueItem]], list[Encoded]]


def _on_event_loop() -> bool:
    """This thread runs an asyncio event loop (looked up only when the handoff is full)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Disk:
    """A pipeline's store, its deferred rows and the spool, in one process."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        build: Build,
        abort: threading.Event,
        on_full: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.build = build
        self.abort = abort
        self.on_full = on_full
        self.store = Store(settings.local_store)
        self.limit = max(settings.flush_at * 10, settings.max_queue_size // 10)
        self.handoff: collections.deque[QueueItem] = collections.deque()
        self.held = 0  # deferred rows this process holds (claimed) on disk: its sender's to send
        self.burst = Burst(logging.WARNING, DEFER_LOG)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # ``held`` and the rows it counts change together under it (re-entrant: a reconcile
        # or an eviction counts what it moved while holding it).
        self._disk_lock = threading.RLock()
        self._unchecked = 0  # bytes this process wrote to the spool since it last measured it
        self._retain_at = 0.0  # monotonic time of the next LOCAL_STORE_RETENTION_DAYS pass

    # ------------------------------------------------------------------ destinations
    def store_locally(self, batch: list[Encoded]) -> None:
        """No write key: the local store is the destination."""
        batch = self._unerased(batch)
        if not batch:
            return
        try:
            self.store.insert(batch, LOCAL)
        except Exception as exc:
            log.error("segment: could not write %d message(s) to the local store: %s", len(batch), exc)
            self.ledger.count("failed", len(batch))
            return
        self.ledger.count("stored", len(batch))
        self.retain()

    def spool(self, batch: list[Encoded], why: str) -> None:
        """Undeliverable for now: kept for ``replay`` (SPOOL), else failed, counted, logged."""
        batch = self._unerased(batch)
        if not batch:
            return
        if not self.settings.spool:
            log.error("segment: %d message(s) not delivered (%s) and SPOOL is off", len(batch), why)
            self.ledger.count("failed", len(batch))
            return
        try:
            self.store.insert(batch, SPOOL, error=why)
        except Exception as exc:
            log.error("segment: %d message(s) not delivered (%s) and not spooled: %s", len(batch), why, exc)
            self.ledger.count("failed", len(batch))
            return
        self.ledger.spool_log.note(len(batch), why, self.settings.local_store)
        self.ledger.count("spooled", len(batch))
        self.bound(batch)

    # ------------------------------------------------------------------ the overflow
    def add(self, item: QueueItem) -> bool:
        """Take a message the full queue could not (request path); False only when the
        handoff is full and the caller is an event loop.

        The handoff fills only when messages come faster than the writer can build and
        store them (an in-process loop, never a server whose requests cost more than a
        message). Then the caller writes the handoff itself, as a pool's caller-runs policy
        does: that one call waits on the disk, and nothing is lost. An event loop's thread
        must never wait on the disk (SPEC: the async adapters never block the loop), so
        there the message is dropped, counted and logged."""
        if len(self.handoff) >= self.limit:
            if _on_event_loop():
                return False
            self.write([*take(self.handoff), item])
            return True
        self.handoff.append(item)
        if not self._wake.is_set():
            self._wake.set()
        if self._thread is None:
            self._start()
        return True

    @property
    def writing(self) -> bool:
        """The writer thread is running."""
        return self._thread is not None

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
            if len(self.handoff) < self.settings.flush_at:
                self.abort.wait(GATHER)  # a trickle: gather it into one transaction
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

    def write(self, items: list[QueueItem]) -> None:
        """Store a burst: deferred rows with a write key, the local store without one."""
        if not items:
            return
        self.on_full()  # the queue is full: if every sender is stuck on the endpoint, one more
        ready = self._unerased(self.build(items))
        if not ready:
            return
        if self.settings.uses_store:
            self.store_locally(ready)
            return
        with self._disk_lock:
            try:
                self.store.insert(ready, DEFERRED, claimed=True)
            except Exception as exc:
                log.error("segment: %d message(s) could not be deferred to the spool: %s", len(ready), exc)
                self.ledger.count("failed", len(ready))
                return
            self.held += len(ready)
            self.burst.note(len(ready), self.settings.local_store)
            self.ledger.count("deferred", len(ready))
        self.bound(ready)

    def write_all(self) -> None:
        """What the handoff holds, written now (where no thread can be started)."""
        self.write(take(self.handoff))

    # ------------------------------------------------------------------ rows on disk
    def _moved(self, n: int, key: str) -> None:
        """``n`` held rows left the disk as ``key``."""
        if n:
            with self._disk_lock:
                self.held -= n
                self.ledger.moved(n, key)

    def drained(self, result: ReplayResult) -> None:
        """Account for a drain of the held rows. None left although some are held:
        another process evicted them past SPOOL_MAX_MB."""
        self._moved(result.sent, "delivered")
        self._moved(result.rejected, "failed")
        if not (result.sent or result.rejected or result.error):
            self._reconcile()

    def spooled(self, ids: list[int], why: str) -> None:
        """Held rows whose delivery failed for good join the spool (for `replay`)."""
        try:
            moved = self.store.to_spool(ids, why)  # those a deletion did not purge meanwhile
        except Exception as exc:
            log.warning("segment: could not move %d deferred message(s) to the spool: %s", len(ids), exc)
            return
        if moved:
            self.ledger.spool_log.note(moved, why, self.settings.local_store)
        self._moved(moved, "spooled")

    def _reconcile(self) -> None:
        with self._disk_lock:
            lost = self.held - self.store.count_mine(DEFERRED)
            if lost > 0:
                self.ledger.drop_log.note(lost, "deferred rows evicted past SPOOL_MAX_MB by another")
                self._moved(lost, "dropped")

    def retain(self) -> None:
        """LOCAL_STORE_RETENTION_DAYS: after a write, at most once per RETAIN_EVERY, the
        rows older than that leave the store (the writes are what make it grow; a store
        nobody writes to is left alone)."""
        days = self.settings.local_store_retention_days
        now = time.monotonic()
        if days is None or now < self._retain_at:
            return
        self._retain_at = now + RETAIN_EVERY
        try:
            expired = self.store.expire(time.time() - days * 86400)
        except Exception as exc:
            log.warning("segment: could not apply LOCAL_STORE_RETENTION_DAYS: %s", exc)
            return
        if expired:
            log.info(
                "segment: %d row(s) older than LOCAL_STORE_RETENTION_DAYS (%g) deleted from %s",
                expired,
                days,
                self.settings.local_store,
            )

    # ------------------------------------------------------------------ deletion
    def _unerased(self, batch: list[Encoded]) -> list[Encoded]:
        """No message of a user this process deleted is written to disk (``erasure``)."""
        kept, removed = without_erased(batch)
        if removed:
            self.ledger.count("blocked", removed)
        return kept

    def link(self, subjects: Subjects) -> None:
        """The anonymousIds the handoff and the store saw with the deleted users."""
        subjects.link_queued(self.handoff.copy())
        subjects.anonymous_ids.update(self.store.linked_anonymous_ids(subjects.user_ids))

    def purge(self, subjects: Subjects) -> tuple[int, int]:
        """Remove the deleted users' messages from the handoff and their rows from the store
        (local, spooled, deferred: every kind). Returns (messages taken from memory, rows
        deleted). This process's own deferred rows leave its ``deferred`` count as
        ``blocked``; another process's are counted by that process when it next looks."""
        taken = take(self.handoff)  # add() appends on the right meanwhile: the older go back left
        kept = [item for item in taken if not subjects.covers_queued(item)]
        self.handoff.extendleft(reversed(kept))
        if kept:
            self._wake.set()
            if self._thread is None:
                self._start()
        removed = len(taken) - len(kept)
        if removed:
            self.ledger.count("blocked", removed)
        with self._disk_lock:
            purged = self.store.purge(subjects.user_ids, subjects.anonymous_ids)
            self._moved(purged.own_deferred, "blocked")
        return removed, purged.rows

    def bound(self, batch: list[Encoded]) -> None:
        """SPOOL_MAX_MB, after this process wrote ``batch`` to disk: past it the oldest
        waiting rows go, counted as dropped (here for this process's own deferred rows; their
        owners count the others'). Only writes take the spool past the bound, so each
        process looks once per twentieth of it that it wrote."""
        self.retain()
        limit = int(self.settings.spool_max_mb * 1024 * 1024)
        with self._disk_lock:
            self._unchecked += sum([len(encoded.body) for encoded in batch])
            if self._unchecked < limit // 20:
                return
            self._unchecked = 0
            try:
                result = self.store.evict(limit)
            except Exception as exc:
                log.warning("segment: could not check the spool's size: %s", exc)
                return
            if result is not None and result[0]:
                evicted, own = result
                why = "the spool is over SPOOL_MAX_MB; its oldest rows were evicted"
                self.ledger.drop_log.note(evicted, why)
                self._moved(own, "dropped")

    def hand_over(self) -> None:
        """At exit: the held rows go to whichever process drains next (any worker of the
        app does, by itself), or to `segment-middleware replay`. They stay in this
        process's ``deferred`` count: on disk, waiting."""
        if self.held <= 0:
            return
        try:
            self._reconcile()
            released = self.store.release_mine()
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
                self.settings.local_store,
            )
