"""A sender thread: takes batches off its pipeline's queue and posts them on its own connection.

A pipeline has one primary sender, and while every sender has waited on the endpoint for
``SLOW_POST`` with a backlog queued, helpers up to ``MAX_IN_FLIGHT`` in all; a helper ends
when the backlog is gone, so a process with a healthy endpoint runs one thread. Only the primary drains the
deferred rows (so they go out oldest first, after the live queue), replays the spool
(``AUTO_REPLAY``) and closes the once-per-burst log lines.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .messages import Encoded, Packed
from .replay import ReplayResult, replay
from .store import DEFERRED, SPOOL

if TYPE_CHECKING:
    from .delivery import Delivery

__all__ = ["Sender"]

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


class Sender:
    """One thread and one kept-alive connection of a pipeline."""

    def __init__(self, delivery: Delivery, *, primary: bool) -> None:
        self.delivery = delivery
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
        d = self.delivery
        interval = d.settings.flush_interval
        flush_at = d.settings.flush_at
        last = time.monotonic()
        try:
            while True:
                d.wake.wait(max(0.0, interval - (time.monotonic() - last)))
                d.wake.clear()
                try:
                    due = d.flushing or d.stopping or time.monotonic() - last >= interval
                    while d.queue and not d.abort.is_set():
                        if not due and len(d.queue) < flush_at:
                            break
                        self.send_batch(d.take_batch())
                        last = time.monotonic()
                    if due:
                        last = time.monotonic()
                    if self.primary:
                        self._housekeeping()
                except Exception:  # never let the sender die
                    log.exception("segment: sender error")
                if not self.primary and len(d.queue) < flush_at:
                    return  # a helper: the backlog is gone
                if (
                    d.stopping
                    and not d.queue
                    and not (self.primary and self._drains() and not d.endpoint_down)
                ):
                    return
        finally:
            d.sender_done(self)

    def _housekeeping(self) -> None:
        d = self.delivery
        for burst in (d.drop_log, d.spool_log, d.overflow.burst):
            burst.tick()
        if d.settings.uses_store or len(d.queue) >= d.settings.flush_at:
            return  # the live queue first
        now = time.monotonic()
        due = now - self._last_replay >= REPLAY_EVERY and not d.stopping
        if d.endpoint_down and not due:
            return  # nothing has got through since the last failure: try again now and then
        if due:
            self._last_replay = now
        if self._drains():
            self._drain_deferred()
            d.wake.set()  # come back at once: the live queue first, then the next rows
        elif due:
            self._replay_others()

    def _drains(self) -> bool:
        """This process holds deferred rows, and is not being cut short."""
        return self.delivery.overflow.held > 0 and not self.delivery.abort.is_set()

    # ------------------------------------------------------------------ batches
    def send_batch(self, items: list[Packed]) -> None:
        ready = self.delivery.prepare(items)
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
        d = self.delivery
        if d.settings.uses_store:
            d.store_locally(batch)
            return
        flight = InFlight(batch)
        self.in_flight = flight
        try:
            self.post(batch)
        except Shutdown:
            if flight.settle():
                d.spool(batch, "shutdown before delivery")
        except Exception as exc:
            if flight.settle():
                self._rejected_or_spooled(batch, exc)
        else:
            d.endpoint_down = False
            if flight.settle():
                d.count("delivered", len(batch))
        finally:
            self.in_flight = None

    def post(self, batch: list[Encoded]) -> None:
        """One batch, already encoded, with the SDK's retry policy (see http.py)."""
        from .http import BatchPoster, Interrupted

        d = self.delivery
        s = d.settings
        if self._poster is None:
            if s.write_key is None:  # without a key messages go to the store, never here
                raise RuntimeError("posting to the endpoint needs WRITE_KEY")
            self._poster = BatchPoster(
                s.write_key,
                s.host,
                timeout=s.timeout,
                max_retries=s.max_retries,
                gzip=s.gzip,
                abort=d.abort,
                on_retry=self._note_retry,
            )
        if d.stopping:  # never let one request outlive SHUTDOWN_TIMEOUT
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
                d.count("retried", len(batch))

    def _note_retry(self) -> None:
        self._retries += 1

    def _rejected_or_spooled(self, batch: list[Encoded], exc: Exception) -> None:
        """A 400 means a message in the batch is bad: split until it is alone, then drop
        it (counted, logged without contents). Anything else is an outage: spool."""
        d = self.delivery
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
            d.count("failed", 1)  # after the log line: flush() returning means it is out
            return
        d.endpoint_down = True
        d.spool(batch, _reason(exc))

    # ------------------------------------------------------------------ rows on disk
    def _drain_deferred(self) -> None:
        """One batch of this process's deferred rows, oldest first. An outage (a network
        error, or a retryable status after all retries) leaves them deferred, tried again
        every REPLAY_EVERY; a status no retry can fix (a bad write key) spools them, as it
        does a live batch."""
        from .http import retryable

        d = self.delivery
        size = d.settings.flush_at
        result = replay(d.store, self.post, kind=DEFERRED, batch_size=size, max_batches=1, mine=True)
        d.overflow.drained(result)
        if result.error is None:
            if result.sent:
                d.endpoint_down = False
            return
        if isinstance(result.error, Shutdown):
            return
        d.endpoint_down = True
        status = getattr(result.error, "status", None)
        if isinstance(status, int) and not retryable(status):
            d.overflow.spooled(result.unsent, _reason(result.error))

    def _replay_others(self) -> None:
        """Rows on disk that are not this process's: deferred rows a stopped process left
        (always), and the spool (with AUTO_REPLAY). Rows are claimed, so several workers
        never send the same one."""
        d = self.delivery
        if not os.path.exists(d.store.path):
            return
        kinds = (DEFERRED, SPOOL) if d.settings.auto_replay else (DEFERRED,)
        try:
            d.store.release_stale_claims()
            for kind in kinds:
                result = replay(
                    d.store, self.post, kind=kind, batch_size=d.settings.flush_at, max_batches=REPLAY_BATCHES
                )
                _log_replayed(kind, result)
                if result.error is not None:
                    d.endpoint_down = True
                    return
                if result.sent:
                    d.endpoint_down = False
        except Exception as exc:  # the store is optional here: never stop the sender
            log.warning("segment: automatic replay skipped: %s", exc)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'status', None) or ''}".strip()


def _log_replayed(kind: str, result: ReplayResult) -> None:
    if result.sent or result.rejected:
        what = "spooled" if kind == SPOOL else "deferred (left by a stopped process)"
        log.info("segment: replayed %d %s message(s), %d rejected", result.sent, what, result.rejected)
