"""A sender thread: takes batches off its pipeline's queue and posts them on its own connection.

A pipeline has one primary sender, and while every sender has waited on the endpoint for
``SLOW_POST`` with a backlog queued, helpers up to ``MAX_IN_FLIGHT`` in all; a helper ends
when the backlog is gone, so a process with a healthy endpoint runs one thread. Only the primary drains the
deferred rows (so they go out oldest first, after the live queue), replays the spool
(``AUTO_REPLAY``) and closes the once-per-burst log lines.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .disk import Build, Disk
from .ledger import Ledger
from .messages import Encoded, QueueItem, take
from .replay import ReplayResult, replay
from .store import DEFERRED, SPOOL

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["InFlight", "Sender", "Shutdown", "Signals"]

log = logging.getLogger("segment_middleware")

MAX_BATCH_BYTES = 475_000  # the SDK's limit, below Segment's 500 KB
REPLAY_EVERY = 5.0  # seconds between AUTO_REPLAY passes and looks for deferred rows left by others
REPLAY_BATCHES = 10  # batches per pass, so replay never starves fresh messages


class InFlight:
    """A batch being posted. Whoever settles it first (its sender with the endpoint's
    answer, or shutdown when time is up) accounts for it, so it is never counted twice."""

    __slots__ = ("_lock", "batch", "settled")

    def __init__(self, batch: list[Encoded]) -> None:
        self.batch = batch
        self.settled = False
        self._lock = threading.Lock()

    def settle(self) -> bool:
        with self._lock:
            if self.settled:
                return False
            self.settled = True
            return True


class Shutdown(Exception):
    """Delivery was cut short by shutdown."""


@dataclasses.dataclass(eq=False)
class Signals:
    """What a pipeline and its senders tell each other: the pipeline wakes them, asks them
    to hurry (``flushing``), to finish (``stopping``) or to stop now (``abort``); they
    tell it whether the endpoint answers (``endpoint_down``)."""

    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    abort: threading.Event = dataclasses.field(default_factory=threading.Event)
    stopping: bool = False
    flushing: int = 0  # flush() calls waiting: send partial batches at once
    endpoint_down: bool = False


class Sender:
    """One thread and one kept-alive connection of a pipeline, built with what it uses:
    the queue it takes from, the signals, the disk (local store, spool, deferred rows), the
    ledger, the function that builds and encodes queued calls, and whom to tell it ended."""

    def __init__(
        self,
        settings: Settings,
        queue: collections.deque[QueueItem],
        signals: Signals,
        disk: Disk,
        ledger: Ledger,
        build: Build,
        on_done: Callable[[Sender], None],
        *,
        primary: bool,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.signals = signals
        self.disk = disk
        self.ledger = ledger
        self.build = build
        self.on_done = on_done
        self.primary = primary
        self.in_flight: InFlight | None = None
        self.post_started: float | None = None  # monotonic time of the post under way
        self._poster: Any = None
        self._retries = 0
        self._last_replay = -REPLAY_EVERY
        self.thread = threading.Thread(target=self._run, name="segment-sender", daemon=True)

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        """Send full batches when WAKE_BATCHES of them are queued or FLUSH_INTERVAL has
        passed, a partial one only at FLUSH_INTERVAL (or when flushing): under load every
        post carries FLUSH_AT messages, and no message waits longer than the interval."""
        sig, queue = self.signals, self.queue
        interval = self.settings.flush_interval
        flush_at = self.settings.flush_at
        last = time.monotonic()
        try:
            while True:
                sig.wake.wait(max(0.0, interval - (time.monotonic() - last)))
                sig.wake.clear()
                try:
                    due = sig.flushing or sig.stopping or time.monotonic() - last >= interval
                    while queue and not sig.abort.is_set():
                        if not due and len(queue) < flush_at:
                            break
                        self.send_batch(take(queue, flush_at))
                        last = time.monotonic()
                    if due:
                        last = time.monotonic()
                    if self.primary:
                        self._housekeeping()
                except Exception:  # never let the sender die
                    log.exception("segment: sender error")
                if not self.primary and len(queue) < flush_at:
                    return  # a helper: the backlog is gone
                if (
                    sig.stopping
                    and not queue
                    and not (self.primary and self._drains() and not sig.endpoint_down)
                ):
                    return
        finally:
            self.on_done(self)

    def _housekeeping(self) -> None:
        sig = self.signals
        self.ledger.tick()
        self.disk.burst.tick()
        if self.settings.uses_store or len(self.queue) >= self.settings.flush_at:
            return  # the live queue first
        now = time.monotonic()
        due = now - self._last_replay >= REPLAY_EVERY and not sig.stopping
        if sig.endpoint_down and not due:
            return  # nothing has got through since the last failure: try again now and then
        if due:
            self._last_replay = now
        if self._drains():
            self._drain_deferred()
            sig.wake.set()  # come back at once: the live queue first, then the next rows
        elif due:
            self._replay_others()

    def _drains(self) -> bool:
        """This process holds deferred rows, and is not being cut short."""
        return self.disk.held > 0 and not self.signals.abort.is_set()

    # ------------------------------------------------------------------ batches
    def send_batch(self, items: list[QueueItem]) -> None:
        ready = self.build(items)
        if sum([len(encoded.body) for encoded in ready]) + len(ready) <= MAX_BATCH_BYTES:
            if ready:
                self.deliver(ready)
            return
        start, size = 0, 0
        for i, encoded in enumerate(ready):
            if size + len(encoded.body) > MAX_BATCH_BYTES and i > start:
                self.deliver(ready[start:i])
                start, size = i, 0
            size += len(encoded.body) + 1
        if start < len(ready):
            self.deliver(ready[start:])

    def deliver(self, batch: list[Encoded]) -> None:
        if self.settings.uses_store:
            self.disk.store_locally(batch)
            return
        flight = InFlight(batch)
        self.in_flight = flight
        try:
            self.post(batch)
        except Shutdown:
            if flight.settle():
                self.disk.spool(batch, "shutdown before delivery")
        except Exception as exc:
            if flight.settle():
                self._rejected_or_spooled(batch, exc)
        else:
            self.signals.endpoint_down = False
            if flight.settle():
                self.ledger.count("delivered", len(batch))
        finally:
            self.in_flight = None

    def post(self, batch: list[Encoded]) -> None:
        """One batch, already encoded, with the SDK's retry policy (see http.py)."""
        from .http import BatchPoster, Interrupted

        s = self.settings
        if self._poster is None:
            if s.write_key is None:  # without a key messages go to the store, never here
                raise RuntimeError("posting to the endpoint needs WRITE_KEY")
            self._poster = BatchPoster(
                s.write_key,
                s.host,
                timeout=s.timeout,
                max_retries=s.max_retries,
                gzip=s.gzip,
                abort=self.signals.abort,
                on_retry=self._note_retry,
            )
        if self.signals.stopping:  # never let one request outlive SHUTDOWN_TIMEOUT
            self._poster.timeout = max(0.1, min(self._poster.timeout, s.shutdown_timeout))
        self._retries = 0
        self.post_started = time.monotonic()
        try:
            self._poster.post([encoded.body for encoded in batch])
        except Interrupted:
            raise Shutdown from None
        finally:
            self.post_started = None
            if self._retries:
                self.ledger.count("retried", len(batch))

    def _note_retry(self) -> None:
        self._retries += 1

    def _rejected_or_spooled(self, batch: list[Encoded], exc: Exception) -> None:
        """A 400 means a message in the batch is bad: split until it is alone, then drop
        it (counted, logged without contents). Anything else is an outage: spool."""
        status = getattr(exc, "status", None)
        if status == 400:
            if len(batch) > 1:
                mid = len(batch) // 2
                self.deliver(batch[:mid])
                self.deliver(batch[mid:])
                return
            msg = batch[0].message
            log.error(
                "segment: the endpoint rejected a %s message (messageId %s): %s",
                msg.get("type"),
                msg.get("messageId"),
                getattr(exc, "message", "") or "400",
            )
            self.ledger.count("failed", 1)  # after the log line: flush() returning means it is out
            return
        self.signals.endpoint_down = True
        self.disk.spool(batch, _reason(exc))

    # ------------------------------------------------------------------ rows on disk
    def _drain_deferred(self) -> None:
        """One batch of this process's deferred rows, oldest first. An outage (a network
        error, or a retryable status after all retries) leaves them deferred, tried again
        every REPLAY_EVERY; a status no retry can fix (a bad write key) spools them, as it
        does a live batch."""
        from .http import retryable

        disk, sig = self.disk, self.signals
        size = self.settings.flush_at
        result = replay(disk.store, self.post, kind=DEFERRED, batch_size=size, max_batches=1, mine=True)
        disk.drained(result)
        if result.error is None:
            if result.sent:
                sig.endpoint_down = False
            return
        if isinstance(result.error, Shutdown):
            return
        sig.endpoint_down = True
        status = getattr(result.error, "status", None)
        if isinstance(status, int) and not retryable(status):
            disk.spooled(result.unsent, _reason(result.error))

    def _replay_others(self) -> None:
        """Rows on disk that are not this process's: deferred rows a stopped process left
        (always), and the spool (with AUTO_REPLAY). Rows are claimed, so several workers
        never send the same one."""
        store, sig = self.disk.store, self.signals
        if not os.path.exists(store.path):
            return
        kinds = (DEFERRED, SPOOL) if self.settings.auto_replay else (DEFERRED,)
        try:
            store.release_stale_claims()
            for kind in kinds:
                result = replay(
                    store, self.post, kind=kind, batch_size=self.settings.flush_at, max_batches=REPLAY_BATCHES
                )
                _log_replayed(kind, result)
                if result.error is not None:
                    sig.endpoint_down = True
                    return
                if result.sent:
                    sig.endpoint_down = False
        except Exception as exc:  # the store is optional here: never stop the sender
            log.warning("segment: automatic replay skipped: %s", exc)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'status', None) or ''}".strip()


def _log_replayed(kind: str, result: ReplayResult) -> None:
    if result.sent or result.rejected:
        what = "spooled" if kind == SPOOL else "deferred (left by a stopped process)"
        log.info("segment: replayed %d %s message(s), %d rejected", result.sent, what, result.rejected)
