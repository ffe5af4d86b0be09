"""Getting messages out of the process: a bounded queue, one sender thread, the SDK's HTTP.

What the official SDK's ``Client`` lacks, and why this module exists (the figures are in
the README and bench/README.md):

- its ``page()`` does tens of microseconds of work on the caller's thread and serializes
  each message three times; here the request path only appends to a deque, and the sender
  thread builds each message and encodes it once (``messages``);
- it is not fork-safe; here every process gets its own queue, thread and HTTP connection;
- its exit hook does not drain the queue and ``flush()`` has no bound; here exit flushes
  within ``SHUTDOWN_TIMEOUT`` and spools the rest;
- it drops silently; here every message is accounted for in :meth:`Delivery.stats`.

What it does well is reused (``http.py``): its auth, ``APIError``, ``parse_retry_after``,
retryable-status rules and backoff schedule; the body is ours, joined from the
already-encoded messages instead of serializing the batch again, and posted with urllib3
over one kept-alive connection per sender.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import gc
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from . import lifecycle
from .lifecycle import install_process_exit, track_forks
from .logs import Burst, announce, sdk_log_filter
from .messages import Blocked, Encoded, Packed, Queued, encode, finish, take
from .overflow import Overflow
from .sender import Sender
from .store import LOCAL, SPOOL, Store

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["Delivery"]

log = logging.getLogger("segment_middleware")

MAX_MESSAGE_BYTES = 32 * 1024
SPOOL_LOG = "segment: %d message(s) not delivered (%s); kept in %s for `segment-middleware replay`"
# The sender is woken when this many full batches are queued (or FLUSH_INTERVAL passes,
# or someone flushes), not at every full batch: each wake-up of a thread that must take
# the GIL from busy request threads costs hand-offs on both sides (bench/README.md).
# Batches still carry FLUSH_AT messages, and FLUSH_INTERVAL still bounds how long a
# message waits.
WAKE_BATCHES = 10
SLOW_POST = 0.25  # seconds a post has waited on the endpoint before another sender may help
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
)


class Delivery:
    """One process's pipeline for one Settings: queue -> sender threads -> Segment or store,
    and past MAX_QUEUE_SIZE: handoff -> the spool's deferred rows -> the primary sender."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.local_store)
        if settings.write_key:
            sdk_log_filter.secrets.add(settings.write_key)
            _load_http()
        _install_process_hooks()
        self._reset()
        _registry.add(self)

    def _reset(self) -> None:
        """Fresh state: at construction and in a forked child (whose inherited queue the
        parent is already sending; see :meth:`_fresh`)."""
        self.queue: collections.deque[Packed] = collections.deque()  # Queued.pack()
        # Re-entrant: an exit-signal handler may flush on a thread that was interrupted inside put().
        self._lock = threading.RLock()
        self._idle = threading.Condition(threading.Lock())
        self.wake = threading.Event()
        self.abort = threading.Event()
        self._senders: list[Sender] = []
        self.stopping = False
        self.flushing = 0  # flush() calls waiting: send partial batches at once
        self.endpoint_down = False
        self.counts = dict.fromkeys(STAT_KEYS, 0)
        self._pending = 0
        self.drop_log = Burst(logging.WARNING, "segment: dropped %d message(s): %s")
        self.spool_log = Burst(logging.WARNING, SPOOL_LOG)
        self.overflow = Overflow(self)
        self._generation = lifecycle.generation
        s = self.settings
        self._wake_at = max(1, min(s.flush_at * WAKE_BATCHES, s.max_queue_size // 2))
        # A backlog this long while every sender waits on the endpoint starts another.
        self._more_at = max(self._wake_at, s.max_queue_size // 4)
        self._overflows = s.spool or s.uses_store  # past MAX_QUEUE_SIZE: to disk, not away

    # ------------------------------------------------------------------ request path
    def _fresh(self) -> None:
        """In a forked child, the first use renews this pipeline: an empty queue, its own
        threads (each with its own HTTP connection), store handle and the SDK's session; the
        parent keeps sending what it queued."""
        if self._generation != lifecycle.generation:
            with lifecycle.fork_lock:
                if self._generation != lifecycle.generation:
                    _renew_sdk_session()
                    self._reset()
                    self.store = Store(self.settings.local_store)
                    announce(self.settings)  # a forked worker says it too, with its own pid

    def put(self, item: Packed) -> None:
        """Queue a message. Never blocks, never raises, never does I/O."""
        if _capture is not None:
            self._hand_to_capture(item, _capture)
            return
        if _watching:  # a debug panel lists this request's calls (watch())
            seen = _watchers.get()
            if seen is not None:
                seen.append(Watched(Queued.unpack(item), self.settings))
        if self._generation != lifecycle.generation:  # _fresh's own test, inline: put runs per request
            self._fresh()
        q = self.queue
        with self._lock:
            self.counts["queued"] += 1
            self._pending += 1
            if len(q) < self.settings.max_queue_size:
                q.append(item)
                full = False
            else:
                full = True
        if full:
            if not self._overflows:
                self._dropped(1, "queue full (MAX_QUEUE_SIZE) and SPOOL is off")
            elif not self.overflow.add(item):
                self._dropped(1, "queue full (MAX_QUEUE_SIZE) and the spool writer behind")
            return
        n = len(q)
        if n >= self._wake_at:
            if not self.wake.is_set():
                self.wake.set()
            if n >= self._more_at:
                self.more_senders()
        if not self._senders:
            self._start(primary=True)

    def _hand_to_capture(self, item: Packed, sink: Callable[[dict[str, Any]], None]) -> None:
        """``testing.capture()``: the message built now, as the sender would build it, and
        given to the capture as the endpoint would read it; counted as delivered."""
        with self._lock:
            self.counts["queued"] += 1
            self._pending += 1
        for encoded in self.prepare([item]):
            sink(orjson.loads(encoded.body))
            self.count("delivered", 1)

    def _start(self, *, primary: bool) -> None:
        with self._lock:
            if primary == bool(self._senders) or len(self._senders) >= self.settings.max_in_flight:
                return  # a primary runs already, or a helper is not wanted
            sender = Sender(self, primary=primary)
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

    def sender_done(self, sender: Sender) -> None:
        with self._lock:
            if sender in self._senders:
                self._senders.remove(sender)

    # ------------------------------------------------------------------ accounting
    def count(self, key: str, n: int) -> None:
        """``n`` messages left memory as ``key`` (``retried`` only counts)."""
        with self._lock:
            self.counts[key] += n
            if key != "retried":
                self._pending -= n
        if self._pending <= 0:
            with self._idle:
                self._idle.notify_all()

    def _dropped(self, n: int, reason: str) -> None:
        """Count a drop, and log it once per burst."""
        self.drop_log.note(n, reason)  # first: flush() returning means the line is out
        self.count("dropped", n)

    def moved(self, n: int, key: str) -> None:
        """``n`` of this process's deferred messages left the disk as ``key``."""
        if n:
            with self._lock:
                self.counts["deferred"] -= n
                self.counts[key] += n

    def stats(self) -> dict[str, int]:
        self._fresh()
        with self._lock:
            return dict(self.counts)

    @property
    def posting(self) -> int:
        """Senders waiting on the endpoint now."""
        return sum(1 for sender in list(self._senders) if sender.post_started is not None)

    @property
    def pending(self) -> int:
        """Messages in memory and not yet settled (delivered, stored, deferred to disk,
        spooled, failed or dropped)."""
        return self._pending

    # ------------------------------------------------------------------ building, storing
    def take_batch(self) -> list[Packed]:
        """A batch's worth off the queue."""
        return take(self.queue, self.settings.flush_at)

    def prepare(self, items: list[Packed]) -> list[Encoded]:
        """Finish and encode each message once; account for the ones that cannot go."""
        ready: list[Encoded] = []
        settings = self.settings
        # No time.sleep(0) between messages to "let request threads in": on a busy process
        # each one forces a GIL hand-back, which costs requests more than the time a batch
        # holds the GIL (bench/README.md).
        for packed in items:
            item: Queued | None = None
            try:
                item = Queued.unpack(packed)
                msg = finish(item, settings)
                if msg is None:
                    self._dropped(1, "BEFORE_SEND returned None")
                    continue
                body = encode(msg)
            except Blocked:
                self.count("blocked", 1)
                continue
            except Exception as exc:
                kind: Any = "queued"  # not a packed call: counted and logged like any other
                if item is not None:
                    kind = "page" if item.message is None else item.message.get("type")
                log.error("segment: could not build a %s message: %s", kind, exc)
                self.count("failed", 1)
                continue
            if len(body) > MAX_MESSAGE_BYTES:
                log.error(
                    "segment: dropped a %s message of %d bytes (over Segment's 32 KB limit), messageId %s",
                    msg.get("type"),
                    len(body),
                    msg.get("messageId"),
                )
                self.count("failed", 1)
                continue
            ready.append(Encoded(msg, body))
        return ready

    def store_locally(self, batch: list[Encoded]) -> None:
        """No write key: the local store is the destination."""
        try:
            self.store.insert(batch, LOCAL)
        except Exception as exc:
            log.error("segment: could not write %d message(s) to the local store: %s", len(batch), exc)
            self.count("failed", len(batch))
            return
        self.count("stored", len(batch))

    def spool(self, batch: list[Encoded], why: str) -> None:
        if not self.settings.spool:
            log.error("segment: %d message(s) not delivered (%s) and SPOOL is off", len(batch), why)
            self.count("failed", len(batch))
            return
        try:
            self.store.insert(batch, SPOOL, error=why)
        except Exception as exc:
            log.error("segment: %d message(s) not delivered (%s) and not spooled: %s", len(batch), why, exc)
            self.count("failed", len(batch))
            return
        self.spool_log.note(len(batch), why, self.settings.local_store)
        self.count("spooled", len(batch))
        self.overflow.bound_disk(batch)

    # ------------------------------------------------------------------ flush / shutdown
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message queued so far has left memory (delivered, or on disk);
        False if ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fresh()
        if self._pending <= 0:
            return True
        if not any(sender.primary and sender.thread.is_alive() for sender in self._senders):
            with self._lock:
                self._senders.clear()
            self._start(primary=True)
            if not self._senders:  # cannot start threads now (interpreter exit): do it here
                self._drain_here(deadline)
                return self._pending <= 0
        self.flushing += 1
        try:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.wake.set()
                self.more_senders()
                with self._idle:
                    if self._pending > 0:
                        self._idle.wait(0.05 if remaining is None else min(0.05, remaining))
            return True
        finally:
            self.flushing -= 1

    def _drain_here(self, deadline: float | None) -> None:
        sender = Sender(self, primary=True)
        self.overflow.write(take(self.overflow.handoff))
        while self.queue and (deadline is None or time.monotonic() < deadline):
            sender.send_batch(self.take_batch())

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` (default SHUTDOWN_TIMEOUT); spool whatever is left."""
        self._fresh()  # a forked child that never sent anything has nothing to flush
        try:
            self._shutdown(self.settings.shutdown_timeout if timeout is None else timeout)
        finally:  # the last word on an outage: how many were dropped or spooled, and the totals
            for burst in (self.drop_log, self.spool_log, self.overflow.burst):
                burst.tick(force=True)
            if self.counts["queued"]:
                totals = orjson.dumps(self.stats()).decode()
                log.info("segment: stats at exit (pid %d): %s", os.getpid(), totals)

    def _shutdown(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.stopping = True
        reserve = min(0.5, timeout * 0.2)
        if self.flush(max(0.0, timeout - reserve)):
            # All settled in memory: the primary sends this process's deferred rows before
            # it ends, while time is left.
            self.wake.set()
            for sender in list(self._senders):
                sender.thread.join(max(0.0, deadline - reserve - time.monotonic()))
            if not any(sender.thread.is_alive() for sender in self._senders):
                self.overflow.hand_over()
                return
        # Out of time: stop retrying, and keep what is still queued for `replay`.
        self.abort.set()
        left = take(self.overflow.handoff) + take(self.queue)
        if left:
            ready = self.prepare(left)
            if self.settings.uses_store:
                self.store_locally(ready)
            elif ready:
                self.spool(ready, "not delivered within SHUTDOWN_TIMEOUT")
        for sender in list(self._senders):
            sender.thread.join(max(0.0, min(reserve, deadline - time.monotonic())))
            flight = sender.in_flight
            if flight is not None and flight.settle():
                # Still waiting on the endpoint: keep a copy. If that request does land, replay
                # resends the same messageIds, which Segment de-duplicates.
                self.spool(flight.batch, "still in flight at SHUTDOWN_TIMEOUT")
        self.overflow.hand_over()


# ---------------------------------------------------------------------- process-wide
def _load_http() -> None:
    """Load the sender's HTTP modules (requests, the SDK) with the app, in the process that
    builds it (before a preloading server forks), never on the sender thread under
    traffic, where importing them would hold the GIL from requests.

    Their import leaves tens of thousands of long-lived objects, enough to make a full
    collection of the process due within seconds. So the first load is followed by one
    full collection, here at start-up, where that pause costs no request
    (bench/README.md); not when the app has turned the collector off."""
    if "segment_middleware.http" in sys.modules:
        return
    from . import http  # noqa: F401

    if gc.isenabled():
        gc.collect()


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
    parent's sockets. The senders post through their own pools (``http.py``, renewed with
    the senders); the SDK's session is what ``segment-middleware check`` and the app's own
    SDK calls use. Called under ``lifecycle.fork_lock``."""
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
