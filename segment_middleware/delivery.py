"""Getting messages out of the process: a bounded queue, sender threads, the disk.

What the official SDK's ``Client`` lacks, and why this module exists:

- its ``page()`` does tens of microseconds of work on the caller's thread and serializes
  each message three times; here each message is built and encoded once (``messages``:
  as it is queued, or by a sender thread when the app's hooks take part) and the request
  path appends to a deque, never waiting on I/O;
- it is not fork-safe; here every process gets its own queue, threads and connections;
- its exit hook does not drain the queue and ``flush()`` has no bound; here exit flushes
  within ``SHUTDOWN_TIMEOUT`` and spools the rest;
- it drops silently; here every message is accounted for (``ledger``).

A pipeline is wired from parts that each own one thing and are handed what they use:

    put() -> queue -> Sender threads (sender.py) -> http.py -> Segment
                  \\-> past MAX_QUEUE_SIZE: Disk's handoff -> deferred rows (disk.py)
    every outcome -> Ledger (ledger.py): stats(), flush()'s wait, the log lines

:class:`Delivery` holds the queue, ``put``/``flush``/``shutdown`` and that wiring.
The process-wide parts (the registry, exit hooks, forks, the HTTP modules) are in
``pipelines``; the test capture and the debug panel's watch in ``taps``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from . import lifecycle, pipelines, taps
from .disk import Disk
from .ledger import STAT_KEYS, Ledger
from .logs import announce, hide_in_logs
from .messages import Encoded, Queued, QueueItem, build, prepare, take
from .sender import Sender, Signals

if TYPE_CHECKING:
    from .erasure import Subjects
    from .settings import Settings

__all__ = ["STAT_KEYS", "Delivery"]

# The sender is woken when this many full batches are queued (or FLUSH_INTERVAL passes,
# or someone flushes), not at every full batch: each wake-up of a thread that must take
# the GIL from busy request threads costs hand-offs on both sides (bench/README.md).
# Batches still carry FLUSH_AT messages, and FLUSH_INTERVAL still bounds how long a
# message waits.
WAKE_BATCHES = 10
SLOW_POST = 0.25  # seconds a post has waited on the endpoint before another sender may help


class Delivery:
    """One process's pipeline for one Settings: queue -> sender threads -> Segment or the
    local store, and past MAX_QUEUE_SIZE: the disk's handoff -> deferred rows -> the
    primary sender."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        hide_in_logs(settings)
        if settings.write_key:
            pipelines.load_http()
        pipelines.install_process_hooks()
        self._build()
        pipelines.register(self)

    def _build(self) -> None:
        """Fresh parts: at construction and in a forked child (whose inherited queue the
        parent is already sending; see :meth:`_fresh`)."""
        s = self.settings
        self.queue: collections.deque[QueueItem] = collections.deque()
        # Re-entrant: an exit-signal handler may flush on a thread interrupted inside put().
        self._lock = threading.RLock()
        self.ledger = Ledger()
        self.signals = Signals()
        self.build: Callable[[list[QueueItem]], list[Encoded]] = functools.partial(
            prepare, settings=s, ledger=self.ledger
        )
        self.build_one: Callable[[Queued], Encoded | None] = functools.partial(
            build, settings=s, ledger=self.ledger
        )
        self.disk = Disk(s, self.ledger, self.build, self.signals.abort, self.more_senders)
        self._senders: list[Sender] = []
        self._generation = lifecycle.generation
        self._max = s.max_queue_size
        self._wake_at = max(1, min(s.flush_at * WAKE_BATCHES, s.max_queue_size // 2))
        # A backlog this long while every sender waits on the endpoint starts another.
        self._more_at = max(self._wake_at, s.max_queue_size // 4)
        self._overflows = s.spool or s.uses_store  # past MAX_QUEUE_SIZE: to disk, not away
        self._build_now = s.builds_when_queued

    @property
    def shutdown_timeout(self) -> float:
        return self.settings.shutdown_timeout

    # ------------------------------------------------------------------ request path
    def _fresh(self) -> None:
        """In a forked child, the first use renews this pipeline: an empty queue, its own
        threads (each with its own HTTP connection), store handle and the SDK's session; the
        parent keeps sending what it queued."""
        if self._generation != lifecycle.generation:
            with lifecycle.fork_lock:
                if self._generation != lifecycle.generation:
                    pipelines.renew_sdk_session()
                    self._build()
                    announce(self.settings)  # a forked worker says it too, with its own pid

    def put(self, item: Queued) -> None:
        """Queue a call: built first when ``Settings.builds_when_queued``, else packed for
        the sender to build. Never raises; never waits on I/O, unless the disk writer is a
        whole handoff behind an overflow (see :meth:`Disk.add`)."""
        sink = taps.capture_sink
        if sink is not None:
            self._hand_to_capture(item, sink)
            return
        if taps.watching:  # a debug panel lists this request's calls (taps.watch())
            seen = taps.watchers.get()
            if seen is not None:
                seen.append(taps.Watched(dataclasses.replace(item), self.settings))  # its own copy
        if self._generation != lifecycle.generation:  # _fresh's own test, inline: put runs per request
            self._fresh()
        self.ledger.queued()
        queued: QueueItem
        if self._build_now:  # Settings.builds_when_queued: the sender is left with the posts
            built = self.build_one(item)
            if built is None:
                return  # dropped, blocked or failed: settled and counted by the build
            queued = built
        else:
            queued = item.packed()
        q = self.queue
        with self._lock:
            if len(q) < self._max:
                q.append(queued)
                full = False
            else:
                full = True
        if full:
            if not self._overflows:
                self.ledger.dropped(1, "queue full (MAX_QUEUE_SIZE) and SPOOL is off")
            elif not self.disk.add(queued):
                self.ledger.dropped(1, "queue full, spool writer behind, on an event loop")
            return
        n = len(q)
        if n >= self._wake_at:
            wake = self.signals.wake
            if not wake.is_set():
                wake.set()
            if n >= self._more_at:
                self.more_senders()
        if not self._senders:
            self._start(primary=True)

    def _hand_to_capture(self, item: Queued, sink: Callable[[dict[str, Any]], None]) -> None:
        """``testing.capture()``: the message built now, as the sender would build it, and
        given to the capture as the endpoint would read it; counted as delivered."""
        self.ledger.queued()
        encoded = self.build_one(item)
        if encoded is not None:
            sink(orjson.loads(encoded.body))
            self.ledger.count("delivered", 1)

    # ------------------------------------------------------------------ senders
    def new_sender(self, *, primary: bool) -> Sender:
        """A sender of this pipeline, not started (``replay`` posts through one)."""
        return Sender(
            self.settings,
            self.queue,
            self.signals,
            self.disk,
            self.ledger,
            self.build,
            self._sender_done,
            primary=primary,
        )

    def _start(self, *, primary: bool) -> None:
        with self._lock:
            if primary == bool(self._senders) or len(self._senders) >= self.settings.max_in_flight:
                return  # a primary runs already, or a helper is not wanted
            sender = self.new_sender(primary=primary)
            try:
                sender.thread.start()
            except RuntimeError:  # interpreter shutting down: flush() drains on its own thread
                return
            self._senders.append(sender)

    def more_senders(self) -> None:
        """A backlog while every sender has waited on the endpoint for SLOW_POST or more:
        one more, up to MAX_IN_FLIGHT (against a fast endpoint more would only contend
        for the GIL)."""
        if len(self.queue) < self._more_at:
            return
        now = time.monotonic()
        senders = list(self._senders)
        if senders and all(now - (sender.post_started or now) >= SLOW_POST for sender in senders):
            self._start(primary=False)

    def _sender_done(self, sender: Sender) -> None:
        with self._lock:
            if sender in self._senders:
                self._senders.remove(sender)

    @property
    def posting(self) -> int:
        """Senders waiting on the endpoint now."""
        return sum(1 for sender in list(self._senders) if sender.post_started is not None)

    # ------------------------------------------------------------------ accounting
    def stats(self) -> dict[str, int]:
        self._fresh()
        return self.ledger.stats()

    @property
    def pending(self) -> int:
        """Messages in memory and not yet settled (delivered, stored, deferred to disk,
        spooled, failed or dropped)."""
        return self.ledger.pending

    # ------------------------------------------------------------------ deletion
    @property
    def store_path(self) -> str:
        """The local store this pipeline writes (LOCAL_STORE)."""
        return self.settings.local_store

    def link(self, subjects: Subjects) -> None:
        """Add to ``subjects`` the anonymousIds this pipeline's queue, handoff and store saw
        with the deleted users (``privacy``: every holder is asked before any is purged)."""
        self._fresh()
        subjects.link_queued(self.queue.copy())
        self.disk.link(subjects)

    def purge(self, subjects: Subjects) -> tuple[int, int]:
        """Remove the deleted users' messages from this pipeline: the queue, the disk's
        handoff, and their rows in its store. Returns (messages taken from memory, rows
        deleted); the messages are counted ``blocked``. A batch a sender has already
        taken is past recall (the regulation covers it at Segment)."""
        self._fresh()
        with self._lock:  # put() appends under it: the queue's order survives the put-back
            taken = take(self.queue)
            kept = [item for item in taken if not subjects.covers_queued(item)]
            self.queue.extendleft(reversed(kept))
        removed = len(taken) - len(kept)
        if removed:
            self.ledger.count("blocked", removed)
        from_handoff, rows = self.disk.purge(subjects)
        return removed + from_handoff, rows

    # ------------------------------------------------------------------ flush / shutdown
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message queued so far has left memory (delivered, or on disk);
        False if ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fresh()
        ledger, signals = self.ledger, self.signals
        if ledger.pending <= 0:
            return True
        if not any(sender.primary and sender.thread.is_alive() for sender in self._senders):
            with self._lock:
                self._senders.clear()
            self._start(primary=True)
            if not self._senders:  # cannot start threads now (interpreter exit): do it here
                self._drain_here(deadline)
                return ledger.pending <= 0
        signals.flushing += 1
        try:
            while ledger.pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                signals.wake.set()
                self.more_senders()
                ledger.wait(0.05 if remaining is None else min(0.05, remaining))
            return True
        finally:
            signals.flushing -= 1

    def _drain_here(self, deadline: float | None) -> None:
        sender = self.new_sender(primary=True)
        self.disk.write_all()
        while self.queue and (deadline is None or time.monotonic() < deadline):
            sender.send_batch(take(self.queue, self.settings.flush_at))

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` (default SHUTDOWN_TIMEOUT); spool whatever is left."""
        self._fresh()  # a forked child that never sent anything has nothing to flush
        try:
            self._shutdown(self.settings.shutdown_timeout if timeout is None else timeout)
        finally:  # the last word on an outage: how many were dropped or spooled, and the totals
            self.ledger.tick(force=True)
            self.disk.burst.tick(force=True)
            self.ledger.log_totals()

    def _shutdown(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        signals, disk = self.signals, self.disk
        signals.stopping = True
        reserve = min(0.5, timeout * 0.2)
        if self.flush(max(0.0, timeout - reserve)):
            # All settled in memory: the primary sends this process's deferred rows before
            # it ends, while time is left.
            signals.wake.set()
            for sender in list(self._senders):
                sender.thread.join(max(0.0, deadline - reserve - time.monotonic()))
            if not any(sender.thread.is_alive() for sender in self._senders):
                disk.hand_over()
                return
        # Out of time: stop retrying, and keep what is still queued for `replay`.
        signals.abort.set()
        left = take(disk.handoff) + take(self.queue)
        if left:
            ready = self.build(left)
            if self.settings.uses_store:
                disk.store_locally(ready)
            elif ready:
                disk.spool(ready, "not delivered within SHUTDOWN_TIMEOUT")
        for sender in list(self._senders):
            sender.thread.join(max(0.0, min(reserve, deadline - time.monotonic())))
            flight = sender.in_flight
            if flight is not None and flight.settle():
                # Still waiting on the endpoint: keep a copy. If that request does land, replay
                # resends the same messageIds, which Segment de-duplicates.
                disk.spool(flight.batch, "still in flight at SHUTDOWN_TIMEOUT")
        disk.hand_over()
        self.ledger.wake_waiters()
