"""Getting messages out of the process: a bounded queue, one sender thread, the SDK's HTTP.

What the official SDK's ``Client`` lacks, and why this module exists (the figures are in
the README and bench/README.md):

- its ``page()`` does tens of microseconds of work on the caller's thread and serializes
  each message three times; here the request path only appends to a deque, and the sender
  thread builds each message and encodes it once (``messages``);
- it is not fork-safe; here every process gets its own queue, thread and HTTP session;
- its exit hook does not drain the queue and ``flush()`` has no bound; here exit flushes
  within ``SHUTDOWN_TIMEOUT`` and spools the rest;
- it drops silently; here every message is accounted for in :meth:`Delivery.stats`.

What it does well is reused (``http.py``): its HTTP session's settings, auth, ``APIError``,
``parse_retry_after``, retryable-status rules and backoff schedule; the body is ours,
joined from the already-encoded messages instead of serializing the batch again, and
posted over a kept-alive connection when the session would add nothing to it.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from . import lifecycle
from .lifecycle import install_process_exit, track_forks
from .logs import Burst, sdk_log_filter
from .messages import Blocked, Encoded, Queued, encode, finish
from .replay import replay
from .store import LOCAL, SPOOL, Store

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["Delivery"]

log = logging.getLogger("segment_middleware")

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 475_000  # the SDK's limit, below Segment's 500 KB
REPLAY_EVERY = 5.0  # seconds between AUTO_REPLAY passes
REPLAY_BATCHES = 10  # batches per pass, so replay never starves fresh messages
SPOOL_LOG = "segment: %d message(s) not delivered (%s); kept in %s for `segment-middleware replay`"
# The sender is woken when this many full batches are queued (or FLUSH_INTERVAL passes,
# or someone flushes), not at every full batch: each wake-up of a thread that must take
# the GIL from busy request threads costs hand-offs on both sides (bench/README.md).
# Batches still carry FLUSH_AT messages, and FLUSH_INTERVAL still bounds how long a
# message waits.
WAKE_BATCHES = 10
STAT_KEYS = ("queued", "delivered", "failed", "dropped", "spooled", "retried", "blocked")


class _InFlight:
    """A batch being posted. Whoever settles it first (the sender with the endpoint's
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


class _Shutdown(Exception):
    """Delivery was cut short by shutdown; the batch goes to the spool."""


class Delivery:
    """One process's pipeline for one Settings: queue -> sender thread -> Segment or store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.local_store)
        if settings.write_key:
            sdk_log_filter.secrets.add(settings.write_key)
        _install_process_hooks()
        self._reset()
        _registry.add(self)

    def _reset(self) -> None:
        """Fresh state: at construction and in a forked child (whose inherited queue the
        parent is already sending; see :meth:`_fresh`)."""
        self._queue: collections.deque[Queued] = collections.deque()
        # Re-entrant: an exit-signal handler may flush on a thread that was interrupted inside put().
        self._lock = threading.RLock()
        self._idle = threading.Condition(threading.Lock())
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._flushing = 0  # flush() calls waiting: send partial batches at once
        self._poster: Any = None
        self._in_flight: _InFlight | None = None
        self._endpoint_ok = False
        self._last_replay = -REPLAY_EVERY
        self._counts = dict.fromkeys(STAT_KEYS, 0)
        self._pending = 0
        self._retries_in_batch = 0
        self._drop_log = Burst(logging.WARNING, "segment: dropped %d message(s): %s")
        self._spool_log = Burst(logging.WARNING, SPOOL_LOG)
        self._generation = lifecycle.generation
        s = self.settings
        self._wake_at = max(1, min(s.flush_at * WAKE_BATCHES, s.max_queue_size // 2))

    # ------------------------------------------------------------------ request path
    def _fresh(self) -> None:
        """In a forked child, the first use renews this pipeline: an empty queue, its own
        thread, store handle and HTTP session; the parent keeps sending what it queued."""
        if self._generation != lifecycle.generation:
            with lifecycle.fork_lock:
                if self._generation != lifecycle.generation:
                    _renew_sdk_session()
                    self._reset()
                    self.store = Store(self.settings.local_store)

    def put(self, item: Queued) -> None:
        """Queue a message. Never blocks, never raises, never does I/O."""
        if _capture is not None:
            self._hand_to_capture(item, _capture)
            return
        if _watching:  # a debug panel lists this request's calls (watch())
            seen = _watchers.get()
            if seen is not None:
                seen.append(Watched(item, self.settings))
        if self._generation != lifecycle.generation:  # _fresh's own test, inline: put runs per request
            self._fresh()
        q = self._queue
        with self._lock:
            self._counts["queued"] += 1
            if len(q) >= self.settings.max_queue_size:
                full = True
            else:
                full = False
                q.append(item)
                self._pending += 1
        if full:
            self._dropped(1, "queue full (MAX_QUEUE_SIZE)")
            return
        if len(q) >= self._wake_at and not self._wake.is_set():
            self._wake.set()
        if self._thread is None:
            self._start()

    def _hand_to_capture(self, item: Queued, sink: Callable[[dict[str, Any]], None]) -> None:
        """``testing.capture()``: the message built now, as the sender would build it, and
        given to the capture as the endpoint would read it; counted as delivered."""
        with self._lock:
            self._counts["queued"] += 1
            self._pending += 1
        for encoded in self._prepare([item]):
            sink(orjson.loads(encoded.body))
            self._count("delivered", 1)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="segment-sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: flush() drains on its own thread
                return
            self._thread = thread

    # ------------------------------------------------------------------ accounting
    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] += n
            if key != "retried":
                self._pending -= n
        if self._pending <= 0:
            with self._idle:
                self._idle.notify_all()

    def _dropped(self, n: int, reason: str, *, queued: bool = False) -> None:
        """Count a drop, and log it once per burst."""
        self._drop_log.note(n, reason)  # first: flush() returning means the line is out
        with self._lock:
            self._counts["dropped"] += n
            if queued:
                self._pending -= n
        if queued and self._pending <= 0:
            with self._idle:
                self._idle.notify_all()

    def stats(self) -> dict[str, int]:
        self._fresh()
        with self._lock:
            return dict(self._counts)

    @property
    def pending(self) -> int:
        """Messages queued and not yet settled (delivered, stored, spooled, failed or dropped)."""
        return self._pending

    # ------------------------------------------------------------------ sender thread
    def _run(self) -> None:
        """Send full batches when WAKE_BATCHES of them are queued or FLUSH_INTERVAL has
        passed, a partial one only at FLUSH_INTERVAL (or when flushing): under load every
        post carries FLUSH_AT messages, and no message waits longer than the interval."""
        interval = self.settings.flush_interval
        flush_at = self.settings.flush_at
        last = time.monotonic()
        while True:
            self._wake.wait(max(0.0, interval - (time.monotonic() - last)))
            self._wake.clear()
            try:
                due = self._flushing or self._stopping or time.monotonic() - last >= interval
                while self._queue and not self._abort.is_set():
                    if not due and len(self._queue) < flush_at:
                        break
                    self._send_batch(self._take())
                    last = time.monotonic()
                if due:
                    last = time.monotonic()
                self._drop_log.tick()
                self._spool_log.tick()
                if self.settings.auto_replay and self._endpoint_ok and not self._stopping:
                    self._replay_some()
            except Exception:  # never let the sender die; it is the only one
                log.exception("segment: sender error")
            if self._stopping and not self._queue:
                return

    def _take(self) -> list[Queued]:
        items: list[Queued] = []
        q = self._queue
        limit = self.settings.flush_at
        while q and len(items) < limit:
            try:
                items.append(q.popleft())
            except IndexError:
                break
        return items

    def _prepare(self, items: list[Queued]) -> list[Encoded]:
        """Finish and encode each message once; account for the ones that cannot go."""
        ready: list[Encoded] = []
        settings = self.settings
        # No time.sleep(0) between messages to "let request threads in": on a busy process
        # each one forces a GIL hand-back, which costs requests more than the time a batch
        # holds the GIL (bench/README.md).
        for item in items:
            try:
                msg = finish(item, settings)
                if msg is None:
                    self._dropped(1, "BEFORE_SEND returned None", queued=True)
                    continue
                body = encode(msg)
            except Blocked:
                self._count("blocked", 1)
                continue
            except Exception as exc:
                kind = "page" if item.message is None else item.message.get("type")
                log.error("segment: could not build a %s message: %s", kind, exc)
                self._count("failed", 1)
                continue
            if len(body) > MAX_MESSAGE_BYTES:
                log.error(
                    "segment: dropped a %s message of %d bytes (over Segment's 32 KB limit), messageId %s",
                    msg.get("type"),
                    len(body),
                    msg.get("messageId"),
                )
                self._count("failed", 1)
                continue
            ready.append(Encoded(msg, body))
        return ready

    def _send_batch(self, items: list[Queued]) -> None:
        ready = self._prepare(items)
        if sum([len(encoded.body) for encoded in ready]) + len(ready) <= MAX_BATCH_BYTES:
            if ready:
                self._deliver(ready)
            return
        start, size = 0, 0
        for i, encoded in enumerate(ready):
            if size + len(encoded.body) > MAX_BATCH_BYTES and i > start:
                self._deliver(ready[start:i])
                start, size = i, 0
            size += len(encoded.body) + 1
        if start < len(ready):
            self._deliver(ready[start:])

    def _deliver(self, batch: list[Encoded]) -> None:
        if self.settings.uses_store:
            try:
                self.store.insert(batch, LOCAL)
            except Exception as exc:
                log.error("segment: could not write %d message(s) to the local store: %s", len(batch), exc)
                self._count("failed", len(batch))
                return
            self._count("delivered", len(batch))
            return
        flight = _InFlight(batch)
        self._in_flight = flight
        try:
            self._post(batch)
        except _Shutdown:
            if flight.settle():
                self._spool(batch, "shutdown before delivery")
        except Exception as exc:
            if flight.settle():
                self._rejected_or_spooled(batch, exc)
        else:
            self._endpoint_ok = True
            if flight.settle():
                self._count("delivered", len(batch))
        finally:
            self._in_flight = None

    def _post(self, batch: list[Encoded]) -> None:
        """One batch, already encoded, with the SDK's retry policy (see http.py)."""
        from .http import BatchPoster, Interrupted

        if self._poster is None:
            s = self.settings
            if s.write_key is None:  # without a key messages go to the store, never here
                raise RuntimeError("posting to the endpoint needs WRITE_KEY")
            self._poster = BatchPoster(
                s.write_key,
                s.host,
                timeout=s.timeout,
                max_retries=s.max_retries,
                gzip=s.gzip,
                abort=self._abort,
                on_retry=self._note_retry,
            )
        if self._stopping:  # never let one request outlive SHUTDOWN_TIMEOUT
            self._poster.timeout = max(0.1, min(self._poster.timeout, self.settings.shutdown_timeout))
        self._retries_in_batch = 0
        try:
            self._poster.post([encoded.body for encoded in batch])
        except Interrupted:
            raise _Shutdown from None
        finally:
            if self._retries_in_batch:
                self._count("retried", len(batch))

    def _note_retry(self) -> None:
        self._retries_in_batch += 1

    def _replay_some(self) -> None:
        """AUTO_REPLAY: once the endpoint answers again, send spooled batches a few at a
        time (rows are claimed, so several workers never send the same one)."""
        now = time.monotonic()
        if now - self._last_replay < REPLAY_EVERY:
            return
        self._last_replay = now
        try:
            self.store.release_stale_claims()
            size = self.settings.flush_at
            result = replay(self.store, self._post, kind=SPOOL, batch_size=size, max_batches=REPLAY_BATCHES)
        except Exception as exc:  # the store is optional here: never stop the sender
            log.warning("segment: automatic replay skipped: %s", exc)
            return
        if result.sent or result.rejected:
            log.info("segment: replayed %d spooled message(s), %d rejected", result.sent, result.rejected)
        if result.error is not None:
            self._endpoint_ok = False

    def _rejected_or_spooled(self, batch: list[Encoded], exc: Exception) -> None:
        """A 400 means a message in the batch is bad: split until it is alone, then drop
        it (counted, logged without contents). Anything else is an outage: spool."""
        status = getattr(exc, "status", None)
        if status == 400:
            if len(batch) > 1:
                mid = len(batch) // 2
                self._deliver(batch[:mid])
                self._deliver(batch[mid:])
                return
            msg = batch[0].message
            log.error(
                "segment: the endpoint rejected a %s message (messageId %s): %s",
                msg.get("type"),
                msg.get("messageId"),
                getattr(exc, "message", "") or "400",
            )
            self._count("failed", 1)  # after the log line: flush() returning means it is out
            return
        self._endpoint_ok = False
        self._spool(batch, f"{type(exc).__name__}: {status or ''}".strip())

    def _spool(self, batch: list[Encoded], why: str) -> None:
        if not self.settings.spool:
            log.error("segment: %d message(s) not delivered (%s) and SPOOL is off", len(batch), why)
            self._count("failed", len(batch))
            return
        try:
            self.store.insert(batch, SPOOL, error=why)
        except Exception as exc:
            log.error("segment: %d message(s) not delivered (%s) and not spooled: %s", len(batch), why, exc)
            self._count("failed", len(batch))
            return
        self._spool_log.note(len(batch), why, self.settings.local_store)
        self._count("spooled", len(batch))

    # ------------------------------------------------------------------ flush / shutdown
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is settled; False if ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fresh()
        if self._pending <= 0:
            return True
        if self._thread is None or not self._thread.is_alive():
            self._thread = None
            self._start()
            if self._thread is None:  # cannot start threads now (interpreter exit): do it here
                self._drain_here(deadline)
                return self._pending <= 0
        self._flushing += 1
        try:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.set()
                with self._idle:
                    if self._pending > 0:
                        self._idle.wait(0.05 if remaining is None else min(0.05, remaining))
            return True
        finally:
            self._flushing -= 1

    def _drain_here(self, deadline: float | None) -> None:
        while self._queue and (deadline is None or time.monotonic() < deadline):
            self._send_batch(self._take())

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` (default SHUTDOWN_TIMEOUT); spool whatever is left."""
        self._fresh()  # a forked child that never sent anything has nothing to flush
        try:
            self._shutdown(self.settings.shutdown_timeout if timeout is None else timeout)
        finally:  # the last word on an outage: how many were dropped or spooled
            self._drop_log.tick(force=True)
            self._spool_log.tick(force=True)

    def _shutdown(self, timeout: float) -> None:
        self._stopping = True
        if self._poster is not None:
            self._poster.timeout = max(0.1, min(self._poster.timeout, timeout))
        reserve = min(0.5, timeout * 0.2)
        if self.flush(max(0.0, timeout - reserve)):
            self._wake.set()
            return
        # Out of time: stop retrying, and keep what is still queued for `replay`.
        self._abort.set()
        left = self._take_all()
        if left:
            ready = self._prepare(left)
            if self.settings.uses_store:
                self._deliver(ready)
            else:
                self._spool(ready, "not delivered within SHUTDOWN_TIMEOUT")
        if self._thread is not None:
            self._thread.join(reserve)
        flight = self._in_flight
        if flight is not None and flight.settle():
            # Still waiting on the endpoint: keep a copy. If that request does land, replay
            # resends the same messageIds, which Segment de-duplicates.
            self._spool(flight.batch, "still in flight at SHUTDOWN_TIMEOUT")

    def _take_all(self) -> list[Queued]:
        items: list[Queued] = []
        while True:
            try:
                items.append(self._queue.popleft())
            except IndexError:
                return items


# ---------------------------------------------------------------------- process-wide
_registry: weakref.WeakSet[Delivery] = weakref.WeakSet()
_capture: Callable[[dict[str, Any]], None] | None = None


class Watched(NamedTuple):
    """A call seen by :func:`watch`, with the settings of the pipeline it went to."""

    item: Queued
    settings: Settings


_watchers: contextvars.ContextVar[list[Watched] | None] = contextvars.ContextVar(
    "segment_watch", default=None
)


_watching = 0  # watch() blocks open in the process: put() reads the context only when > 0
_watching_lock = threading.Lock()


@contextlib.contextmanager
def watch() -> Iterator[list[Watched]]:
    """Every call queued in this context (a request) while the block runs, as well as
    being delivered: for the django-debug-toolbar panel."""
    global _watching
    seen: list[Watched] = []
    token = _watchers.set(seen)
    with _watching_lock:
        _watching += 1
    try:
        yield seen
    finally:
        _watchers.reset(token)
        with _watching_lock:
            _watching -= 1


def set_capture(sink: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None] | None:
    """Hand every message of every pipeline to ``sink`` instead of queueing it (None:
    deliver again); returns the previous sink. For ``testing.capture()``."""
    global _capture
    previous, _capture = _capture, sink
    return previous


def all_deliveries() -> list[Delivery]:
    return list(_registry)


_session_generation = 0
_hooks_installed = False


def _renew_sdk_session() -> None:
    """A forked child's first pipeline gives the SDK a new HTTP session: never the
    parent's sockets. Called under ``lifecycle.fork_lock``."""
    global _session_generation
    if _session_generation == lifecycle.generation:
        return
    _session_generation = lifecycle.generation
    try:
        from requests import sessions
        from segment.analytics import request as sdk_request

        sdk_request._session = sessions.Session()
    except Exception:  # pragma: no cover - SDK layout changed; delivery still works
        pass


def _install_process_hooks() -> None:
    """Once per process, by its first pipeline (a forked child inherits them): the SDK log
    filter, fork tracking, and the flush at interpreter exit and at the exit of a forked
    multiprocessing child. Each step is idempotent, so two first pipelines made at once
    do no harm."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    logging.getLogger("segment").addFilter(sdk_log_filter)
    track_forks()
    install_process_exit(shutdown_all)


def shutdown_all(timeout: float | None = None) -> None:
    """Flush every pipeline within its SHUTDOWN_TIMEOUT, or ``timeout`` when that is
    shorter (at exit, before uvicorn re-raises, on Ctrl-C in Django's reloader child)."""
    for delivery in list(_registry):
        try:
            own = delivery.settings.shutdown_timeout
            delivery.shutdown(own if timeout is None else min(own, timeout))
        except Exception:  # pragma: no cover - never raise at exit
            log.exception("segment: error while flushing at exit")
