"""A Segment-compatible HTTP receiver for tests.

Why this exists: the only honest way to test an analytics pipeline end to end is to let the *real*
``segment-analytics-python`` SDK (its request code, gzip, auth, retry and Retry-After handling) talk
HTTP to something that behaves like ``api.segment.io``. Mocking ``requests`` would test our assumptions
about the SDK instead of the SDK. This module is that something: a small threaded HTTP server on
127.0.0.1 that speaks the Tracking API closely enough (Basic auth with the write key, gzip bodies, the
500 KB batch limit, JSON error bodies, keep-alive) and lets a test switch on the failures that matter in
production - 5xx, 429 with Retry-After, slow answers, connection resets, refused connections and whole
batches rejected because of one bad message, or a random mix of them for soaks (``chaos()``) - from any
thread, while traffic is flowing.

It is the test suite's and the benchmarks' (``bench/`` puts ``tests/`` on its path), not the
package's: users import nothing from here. It depends on nothing but the standard library::

    from segment_receiver import SegmentReceiver

    with SegmentReceiver(write_key="k") as receiver:
        client = segment.analytics.Client("k", host=receiver.url, sync_mode=True)
        client.track("user-1", "Signed Up")
        assert receiver.wait_for(1)[0]["event"] == "Signed Up"

It also runs standalone for benchmarks: ``python tests/segment_receiver.py --port 0 --write-key K``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import gzip
import io
import json
import random
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CHAOS_OUTCOMES",
    "ReceivedRequest",
    "SegmentReceiver",
    "exit_signal_event",
    "main",
    "wait_for_signal",
]

#: Segment rejects batch requests larger than 500 KB with a 400; we model the same limit so that a
#: batching bug in our code fails in tests rather than in production.
MAX_BATCH_BYTES = 500 * 1024

#: Hard cap on what we are willing to read from the socket at all (before decompression). Anything bigger
#: is answered 413 and the connection closed, so a runaway client cannot make a test eat memory.
MAX_READ_BYTES = 16 * 1024 * 1024

#: The batch endpoint plus the single-message endpoints of the Tracking API. For the latter Segment infers
#: the message type from the path, so we do the same when recording them.
BATCH_PATH = "/v1/batch"
SINGLE_PATHS: dict[str, str] = {
    f"/v1/{kind}": kind for kind in ("track", "page", "identify", "group", "alias", "screen")
}

#: analytics.js in the browser (analytics-next) posts each message to ``<apiHost>/<first letter of
#: its type>`` (``/v1/t``, ``/v1/p``, ...) and, with its batching delivery strategy, batches to
#: ``/v1/b``; Segment accepts those too, so a browser pointed at the receiver is recorded the same way.
BROWSER_BATCH_PATH = "/v1/b"
SINGLE_PATHS.update({f"/v1/{kind[0]}": kind for kind in tuple(SINGLE_PATHS.values())})

#: How long an idle keep-alive connection may sit in a handler thread. The SDK pools connections, so idle
#: ones are normal; the bound only guarantees no thread waits forever if the client vanishes.
IDLE_CONNECTION_TIMEOUT = 30.0

#: Time we allow for re-binding the same port after ``refuse()``; bounded so ``healthy()`` cannot hang.
REBIND_TIMEOUT = 5.0

_DEFAULT_ERROR_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

MessagePredicate = Callable[[dict[str, Any]], bool]


@dataclass
class ReceivedRequest:
    """One HTTP request the receiver saw, whatever its fate.

    Everything is recorded - rejected, failed-by-injection and reset requests too - because the
    interesting assertions in retry tests are about the *attempts* (how many, which status, did the
    retried body carry the same messageIds), not only about what was finally accepted.

    ``status`` is the HTTP status we answered, or ``0`` when no response was sent (``reset()``, or the
    receiver went away while the request was being slowed down). ``body`` is the decoded JSON object
    when the body could be decoded (also for failed requests), otherwise ``None``. ``headers`` keeps the
    header names as the client sent them. ``target`` is the request line's target as sent: the path
    with its query, or the absolute URL a client sends to a forward proxy. ``client_port`` tells the
    client's connections apart (keep-alive: the same port for each request on one connection).
    """

    path: str
    status: int
    headers: dict[str, str]
    gzip: bool
    auth_ok: bool
    body: dict[str, Any] | None
    received_at: float
    target: str = ""
    client_port: int = 0


@dataclass
class _Failure:
    """The state behind ``fail_with()``: what to answer and how many more times (``None`` = forever)."""

    status: int
    remaining: int | None
    retry_after: str | None
    body: dict[str, Any]
    headers: dict[str, str] | None = None  # further answer headers (a redirect's Location)


@dataclass
class _Slowness:
    """The state behind ``slow()``."""

    seconds: float
    remaining: int | None


@dataclass
class _Chaos:
    """The state behind ``chaos()``: each outcome's probability and the generator that draws them.

    The generator is the receiver's own (seeded or not), drawn under the receiver's lock, so a seeded
    run gives the same sequence of outcomes for the same sequence of requests, whatever else uses
    ``random`` in the process.
    """

    reset: float
    error: float
    rate_limited: float
    stall: float
    stall_seconds: float
    error_failure: _Failure
    rate_limited_failure: _Failure
    random: random.Random


#: The outcomes ``chaos()`` draws from, as counted in ``SegmentReceiver.chaos_counts``.
CHAOS_OUTCOMES = ("reset", "error", "rate_limited", "stall", "normal")


@dataclass
class _Faults:
    """The faults chosen for one request, decided atomically so concurrent requests share counters fairly."""

    delay: float = 0.0
    reset: bool = False
    failure: _Failure | None = None


class _BadRequest(Exception):
    """Internal: the body cannot be accepted; carries the Segment-style error to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _take(remaining: int | None) -> tuple[bool, int | None]:
    """Consume one use of a counted fault. Returns (applies, new_remaining); ``None`` means unlimited."""
    if remaining is None:
        return True, None
    if remaining <= 0:
        return False, 0
    return True, remaining - 1


class _Server(ThreadingHTTPServer):
    """One listening socket of a receiver.

    A receiver may own several of these over its life: ``refuse()`` closes one and ``healthy()`` binds a
    new one on the same port. ``closing`` tells handler threads of *this* server that it is going away,
    so a request being slowed down stops waiting instead of answering on a dead server.
    """

    daemon_threads = True
    # SO_REUSEADDR: lets healthy() re-bind the port right after refuse() even with connections that are
    # still in TIME_WAIT, which is what keeps ``receiver.url`` stable across a simulated outage.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: SegmentReceiver) -> None:
        self.receiver = receiver
        self.closing = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket) -> None:
        """Remember an accepted connection so that refuse()/stop() can cut it (keep-alive would survive)."""
        with self.connections_lock:
            self.connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self.connections_lock:
            self.connections.discard(conn)

    def cut_connections(self) -> None:
        """Shut down every open connection, waking handler threads blocked on an idle keep-alive read.

        Without this a pooled keep-alive connection of the SDK would keep working after ``refuse()``,
        and the simulated outage would not be an outage.
        """
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by its handler thread
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients going away; only real bugs in the receiver reach stderr.

        Connection resets, broken pipes and errors on a server we are closing are the *point* of a fault
        injecting receiver, and printing a traceback for each would bury the test output.
        """
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or self.closing.is_set():
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP adapter: all decisions are made by ``SegmentReceiver._handle``."""

    # HTTP/1.1 keep-alive, because the SDK posts through a pooled requests.Session; answering HTTP/1.0
    # would make every request open a new connection and hide connection-reuse bugs.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each response waits ~40 ms.
    disable_nagle_algorithm = True
    server_version = "SegmentReceiver/1.0"
    sys_version = ""
    timeout = IDLE_CONNECTION_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def end_headers(self) -> None:
        """Browsers (analytics.js) post from another origin: let them read every answer, like Segment."""
        headers = getattr(self, "headers", None)  # absent when the request line itself was bad
        origin = headers.get("Origin") if headers is not None else None
        if origin:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Access-Control-Expose-Headers", "Retry-After")
            self.send_header("Vary", "Origin")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Never write access logs: tests (and benchmarks) must keep a clean stderr."""

    def do_POST(self) -> None:
        self.server.receiver._serve(self)

    def do_GET(self) -> None:
        self.server.receiver._serve(self)

    def do_PUT(self) -> None:
        self.server.receiver._serve(self)

    def do_PATCH(self) -> None:
        self.server.receiver._serve(self)

    def do_DELETE(self) -> None:
        self.server.receiver._serve(self)

    def do_OPTIONS(self) -> None:
        """CORS preflight, as a browser sends it before posting with an ``Authorization`` header.

        Answered like Segment does (any origin, POST, the headers asked for) and not recorded: it
        carries no message and is no delivery attempt.
        """
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        asked = self.headers.get("Access-Control-Request-Headers")
        self.send_header("Access-Control-Allow-Headers", asked or "Content-Type, Authorization")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()


class SegmentReceiver:
    """A local stand-in for ``api.segment.io`` that records what it receives and can misbehave on demand.

    Thread-safe: requests are served by one thread per connection, and every public method may be called
    from any thread at any time (including the fault switches, so a test can flip the receiver between
    healthy and failing while a background SDK consumer is uploading).
    """

    def __init__(
        self,
        write_key: str = "test-write-key",
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.write_key = write_key
        self.host = host
        self.tls = tls  # serve https with this server context
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Guards start/stop/refuse/healthy so two threads cannot bind or close the same socket at once.
        self._lifecycle = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._refusing = False

        self._requests: list[ReceivedRequest] = []
        self._in_progress = 0  # requests being handled (see wait_answered)
        self.began = 0  # requests whose handling began (a slowed one is recorded only when answered)
        self._batches: list[dict[str, Any]] = []
        self._messages: list[dict[str, Any]] = []

        self._failure: _Failure | None = None
        self._slowness: _Slowness | None = None
        self._resets: int | None = 0
        self._reject: MessagePredicate | None = None
        self._chaos: _Chaos | None = None
        self._chaos_counts: dict[str, int] = dict.fromkeys(CHAOS_OUTCOMES, 0)
        self._interim: int | None = None
        self._answer_headers: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SegmentReceiver:
        """Bind (port 0 picks a free port, remembered for later re-binds) and serve in a daemon thread."""
        with self._lifecycle:
            if self._running:
                return self
            self._running = True
            if not self._refusing:
                self._listen()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections. Idempotent; waiting threads are not woken early."""
        with self._lifecycle:
            self._running = False
            self._close_server()

    def __enter__(self) -> SegmentReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port; stays the same across ``refuse()``/``healthy()`` and stop/start."""
        if self._port is None:
            raise RuntimeError("SegmentReceiver is not started; call start() or use it as a context manager")
        return self._port

    @property
    def url(self) -> str:
        """Base URL to pass as the SDK's ``host`` (the SDK appends ``/v1/batch`` itself)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def _listen(self) -> None:
        """Bind a new listening socket (the same port once one was chosen) and serve it in a thread.

        Re-binding can briefly fail while the kernel finishes tearing down the previous socket, so it is
        retried for a bounded time before giving up loudly.
        """
        port = self._port if self._port is not None else self._requested_port
        deadline = time.monotonic() + REBIND_TIMEOUT
        while True:
            try:
                server = _Server((self.host, port), self)
                break
            except OSError:
                if port == 0 or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        self._port = server.server_address[1]
        if self.tls is not None:  # each accepted connection does its handshake at accept()
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"segment-receiver-{self._port}",
            daemon=True,
        )
        self._thread.start()

    def _close_server(self) -> None:
        """Close the current listening socket (connects are then refused) and cut its connections."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.closing.set()
        server.shutdown()  # returns within poll_interval: the serve thread is always running here
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(timeout=5.0)

    # ------------------------------------------------------------------ recorded traffic

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Snapshot of every request seen, accepted or not, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def batches(self) -> list[dict[str, Any]]:
        """Decoded bodies of accepted (2xx) requests; a single-message request counts as a batch of one."""
        with self._lock:
            return list(self._batches)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message of every accepted batch, in arrival order (duplicates kept: they are the bug)."""
        with self._lock:
            return list(self._messages)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` messages were accepted and return them all.

        The SDK uploads from a background thread, so tests must wait rather than sleep; this waits on a
        Condition (no polling) and fails with a message that says how far delivery got.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= n, timeout=timeout):
                statuses = [r.status for r in self._requests]
                raise AssertionError(
                    f"expected at least {n} accepted message(s) within {timeout}s, "
                    f"but {len(self._messages)} arrived ({len(self._requests)} request(s), "
                    f"statuses {statuses})"
                )
            return list(self._messages)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least ``n`` requests (of any outcome) were seen; for asserting on retries."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout=timeout):
                statuses = [r.status for r in self._requests]
                raise AssertionError(
                    f"expected at least {n} request(s) within {timeout}s, "
                    f"but {len(self._requests)} arrived (statuses {statuses})"
                )
            return list(self._requests)

    def clear(self) -> None:
        """Forget every recorded request, batch and message, and ``chaos_counts`` (faults are kept)."""
        with self._lock:
            self._requests.clear()
            self._batches.clear()
            self._messages.clear()
            self._chaos_counts = dict.fromkeys(CHAOS_OUTCOMES, 0)

    @property
    def chaos_counts(self) -> dict[str, int]:
        """How many ingest requests ``chaos()`` answered with each outcome (``CHAOS_OUTCOMES``).

        Statuses alone cannot show a stall (it ends in a normal answer), and a soak must be able to
        prove the fault mix it claims really happened. Counted since the last ``chaos()`` or
        ``clear()``; ``healthy()`` keeps them, so they can be read after the endpoint recovered.
        """
        with self._lock:
            return dict(self._chaos_counts)

    def by_message_id(self) -> dict[str, list[dict[str, Any]]]:
        """Group accepted messages by ``messageId``; any list longer than one is a duplicate delivery.

        Messages without a string ``messageId`` are left out (Segment cannot deduplicate them either).
        """
        grouped: dict[str, list[dict[str, Any]]] = {}
        for message in self.messages:
            message_id = message.get("messageId")
            if isinstance(message_id, str):
                grouped.setdefault(message_id, []).append(message)
        return grouped

    # ------------------------------------------------------------------ fault injection

    def healthy(self) -> None:
        """Clear every injected fault (``chaos()`` too) and, if refusing, listen again on the same port."""
        with self._lock:
            self._failure = None
            self._slowness = None
            self._resets = 0
            self._reject = None
            self._chaos = None
        with self._lifecycle:
            if self._refusing:
                self._refusing = False
                if self._running:
                    self._listen()

    def fail_with(
        self,
        status: int,
        times: int | None = None,
        retry_after: str | int | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``status`` to the next ``times`` ingest requests (``None``: until ``healthy()``).

        ``retry_after`` is sent verbatim as the ``Retry-After`` header (seconds or an HTTP date), which is
        what drives the SDK's rate-limit handling. The default body is Segment-shaped
        (``{"code": ..., "message": ...}``) because the SDK reads those fields into ``APIError``.
        ``headers`` go with those answers too: ``fail_with(307, 1, headers={"Location": ...})`` is a
        redirect.
        """
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status!r}")
        if times is not None and times < 0:
            raise ValueError("times must be >= 0 or None")
        if body is None:
            body = {
                "code": _DEFAULT_ERROR_CODES.get(status, "error"),
                "message": f"injected failure: HTTP {status}",
            }
        with self._lock:
            self._failure = _Failure(
                status=status,
                remaining=times,
                retry_after=None if retry_after is None else str(retry_after),
                body=body,
                headers=headers,
            )

    def interim(self, status: int | None) -> None:
        """Precede every answer with an interim ``status`` answer (``100 Continue``, ``103 Early
        Hints``); ``None`` stops. What a proxy or server in front of Segment may send."""
        if status is not None and not 100 <= status <= 199:
            raise ValueError(f"not an interim status: {status!r}")
        with self._lock:
            self._interim = status

    def answer_headers(self, headers: dict[str, str]) -> None:
        """Add ``headers`` to every answer from now on (``{}``: none), e.g. a load balancer's
        ``Set-Cookie``."""
        with self._lock:
            self._answer_headers = dict(headers)

    def _decorations(self) -> tuple[int | None, dict[str, str]]:
        with self._lock:
            return self._interim, dict(self._answer_headers)

    def slow(self, seconds: float, times: int | None = None) -> None:
        """Sleep ``seconds`` before answering the next ``times`` ingest requests, then answer normally.

        Combines with ``fail_with``/``reset`` (the delay comes first), so "slow and then 503" is possible.
        The sleep ends early if the receiver is stopped or starts refusing.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._slowness = _Slowness(seconds=seconds, remaining=times)

    def reset(self, times: int | None = None) -> None:
        """Drop the connection without any HTTP response for the next ``times`` ingest requests.

        The close is abortive (SO_LINGER 0), so the client sees ``ECONNRESET`` like when a load balancer
        kills a connection - not a clean EOF. The request body is read first, so the client always gets
        the reset while waiting for the response, never while still sending.
        """
        with self._lock:
            self._resets = times

    def chaos(
        self,
        reset: float = 0.05,
        error: float = 0.10,
        rate_limited: float = 0.05,
        retry_after: str | int | None = 1,
        stall: float = 0.05,
        stall_seconds: float = 3.0,
        seed: int | None = None,
    ) -> None:
        """Answer each ingest request with a fault drawn at random, independently, until ``healthy()``.

        Production endpoints do not fail one way at a time: under a soak, resets, 5xx, rate limits and
        slow answers interleave, and a pipeline can survive each alone yet lose messages to the mix
        (a retry that lands on a rate limit, a shutdown during a stall). Each request gets, with the
        given probabilities: an abortive close like ``reset()`` (``reset``), a 500 (``error``), a 429
        with ``retry_after`` as its ``Retry-After`` header (``rate_limited``; ``None``: no header),
        a wait of ``stall_seconds`` before the normal answer (``stall``), or else the normal answer.
        ``seed`` makes the sequence of outcomes repeatable for the same sequence of requests.

        The explicit switches (``fail_with``, ``slow``, ``reset``) come first: chaos decides only the
        requests they leave alone, so ``chaos_counts`` (zeroed by this call) is exactly what it did.
        """
        for name, p in (("reset", reset), ("error", error), ("rate_limited", rate_limited), ("stall", stall)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if reset + error + rate_limited + stall > 1.0:
            raise ValueError("the fault probabilities add up to more than 1")
        if stall_seconds < 0:
            raise ValueError("stall_seconds must be >= 0")
        failures = {
            status: _Failure(
                status=status,
                remaining=None,
                retry_after=None if status != 429 or retry_after is None else str(retry_after),
                body={"code": _DEFAULT_ERROR_CODES[status], "message": f"injected failure: HTTP {status}"},
            )
            for status in (500, 429)
        }
        with self._lock:
            self._chaos = _Chaos(
                reset=reset,
                error=error,
                rate_limited=rate_limited,
                stall=stall,
                stall_seconds=stall_seconds,
                error_failure=failures[500],
                rate_limited_failure=failures[429],
                random=random.Random(seed),
            )
            self._chaos_counts = dict.fromkeys(CHAOS_OUTCOMES, 0)

    def refuse(self) -> None:
        """Close the listening socket (and open connections) so new connects get ECONNREFUSED.

        Models the endpoint being down. ``healthy()`` re-binds the same port, so ``url`` does not change.
        """
        with self._lifecycle:
            self._refusing = True
            self._close_server()

    def reject_messages(self, predicate: MessagePredicate | None) -> None:
        """Answer 400 ``invalid_request`` to any batch containing a message for which ``predicate`` is true.

        Segment rejects a whole batch because of a single invalid message; this lets a test check that one
        bad event does not poison (or endlessly re-send) the good ones. ``None`` switches it off.
        """
        with self._lock:
            self._reject = predicate

    # ------------------------------------------------------------------ request handling

    def _choose_faults(self) -> _Faults:
        """Decide, atomically, which faults apply to this request and consume their counters."""
        faults = _Faults()
        with self._lock:
            if self._slowness is not None:
                applies, self._slowness.remaining = _take(self._slowness.remaining)
                if applies:
                    faults.delay = self._slowness.seconds
            applies, self._resets = _take(self._resets)
            if applies:
                faults.reset = True
            elif self._failure is not None:
                applies, self._failure.remaining = _take(self._failure.remaining)
                if applies:
                    faults.failure = self._failure
            if self._chaos is not None and not (faults.delay or faults.reset or faults.failure):
                self._draw_chaos(self._chaos, faults)
        return faults

    def _draw_chaos(self, chaos: _Chaos, faults: _Faults) -> None:
        """One ``chaos()`` outcome for a request no explicit fault applies to; the caller holds the lock."""
        draw = chaos.random.random()
        outcome = "normal"
        for name, p in (
            ("reset", chaos.reset),
            ("error", chaos.error),
            ("rate_limited", chaos.rate_limited),
            ("stall", chaos.stall),
        ):
            if draw < p:
                outcome = name
                break
            draw -= p
        if outcome == "reset":
            faults.reset = True
        elif outcome == "error":
            faults.failure = chaos.error_failure
        elif outcome == "rate_limited":
            faults.failure = chaos.rate_limited_failure
        elif outcome == "stall":
            faults.delay = chaos.stall_seconds
        self._chaos_counts[outcome] += 1

    def _record(
        self,
        request: ReceivedRequest,
        batch: dict[str, Any] | None = None,
        messages: list[dict[str, Any]] | None = None,
    ) -> None:
        """Store a request (and its accepted content) and wake waiters.

        Always called *before* the response is written, so that when the client's call returns the
        request is already visible to the test - no sleep needed between posting and asserting.
        """
        with self._changed:
            self._requests.append(request)
            if batch is not None:
                self._batches.append(batch)
            if messages:
                self._messages.extend(messages)
            self._changed.notify_all()

    def _serve(self, handler: _Handler) -> None:
        """One request, counted as in progress until its response (if any) is written."""
        with self._changed:
            self._in_progress += 1
            self.began += 1
        try:
            self._handle(handler)
        finally:
            with self._changed:
                self._in_progress -= 1
                self._changed.notify_all()

    def wait_answered(self, timeout: float = 10.0) -> None:
        """Block until no request is being handled: each one seen so far is answered (or dropped).

        Requests are recorded before they are answered; a test that breaks connections
        right after ``wait_for`` could cut an answer the client has not read yet, and the
        client would rightly retry a batch that was in fact received.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._in_progress == 0, timeout=timeout):
                raise AssertionError(f"{self._in_progress} request(s) not answered within {timeout}s")

    def _auth_header_ok(self, value: str | None) -> bool:
        """HTTP Basic with the write key as user name and an empty password, as the SDK sends it."""
        if not value:
            return False
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        return bool(sep) and user == self.write_key and password == ""

    def _handle(self, handler: _Handler) -> None:
        """Serve one request: read it fully, apply faults, validate like Segment, record, answer."""
        received_at = time.monotonic()
        path = urlsplit(handler.path).path
        headers = dict(handler.headers.items())
        encoding = handler.headers.get("Content-Encoding", "").strip().lower()
        is_gzip = encoding == "gzip"
        header_auth_ok = self._auth_header_ok(handler.headers.get("Authorization"))

        def record(status: int, body: dict[str, Any] | None, auth_ok: bool | None = None, **kw: Any) -> None:
            self._record(
                ReceivedRequest(
                    path=path,
                    status=status,
                    headers=headers,
                    gzip=is_gzip,
                    auth_ok=header_auth_ok if auth_ok is None else auth_ok,
                    body=body,
                    received_at=received_at,
                    target=handler.path,
                    client_port=handler.client_address[1],
                ),
                **kw,
            )

        # 1. Read the whole body first, whatever happens next: leaving unread bytes on a keep-alive
        #    connection would make them parse as the next request.
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            record(411, None)
            _respond(handler, 411, _error("length_required", "Content-Length is required"), close=True)
            return
        try:
            length = int(handler.headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            record(400, None)
            _respond(handler, 400, _error("invalid_request", "invalid Content-Length"), close=True)
            return
        if length > MAX_READ_BYTES:
            record(413, None)
            _respond(handler, 413, _error("payload_too_large", "request too large"), close=True)
            return
        raw = handler.rfile.read(length) if length else b""
        if len(raw) < length:
            handler.close_connection = True  # client went away mid-body; nobody to answer
            record(0, None)
            return

        is_batch = path in (BATCH_PATH, BROWSER_BATCH_PATH)
        single_type = SINGLE_PATHS.get(path)
        if handler.command != "POST" or not (is_batch or single_type):
            record(404, None)
            _respond(handler, 404, _error("not_found", f"no such endpoint: {handler.command} {path}"))
            return

        # 2. Injected faults (only on ingest endpoints, so a stray 404 does not consume them).
        faults = self._choose_faults()
        server = handler.server
        if faults.delay > 0 and server.closing.wait(faults.delay):
            handler.close_connection = True  # receiver stopped/refusing while we slept: no answer
            record(0, _try_decode(raw, is_gzip))
            return
        if faults.reset:
            record(0, _try_decode(raw, is_gzip))
            _abort(handler)
            return
        if faults.failure is not None:
            failure = faults.failure
            record(failure.status, _try_decode(raw, is_gzip))
            extra = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            extra.update(failure.headers or {})
            _respond(handler, failure.status, failure.body, extra)
            return

        # 3. Normal Segment behaviour: decode, authenticate, validate, maybe reject, accept.
        body: dict[str, Any] | None = None
        problem: _BadRequest | None = None
        try:
            body = _decode(raw, is_gzip)
        except _BadRequest as exc:
            problem = exc
        auth_ok = header_auth_ok or (body is not None and body.get("writeKey") == self.write_key)
        if not auth_ok:
            record(401, body, auth_ok=False)
            _respond(handler, 401, _error("unauthorized", "missing or invalid write key"))
            return
        try:
            if body is None:
                raise problem or _BadRequest(400, "invalid_request", "empty body")
            messages = _messages_of(body, single_type)
            self._check_rejected(messages)
        except _BadRequest as exc:
            record(exc.status, body, auth_ok=True)
            _respond(handler, exc.status, _error(exc.code, exc.message))
            return

        batch = body if is_batch else {"batch": messages}
        record(200, body, auth_ok=True, batch=batch, messages=messages)
        _respond(handler, 200, {"success": True})

    def _check_rejected(self, messages: list[dict[str, Any]]) -> None:
        """Apply ``reject_messages``; a predicate that raises is reported as a 500, not a hung client."""
        with self._lock:
            predicate = self._reject
        if predicate is None:
            return
        for index, message in enumerate(messages):
            try:
                bad = predicate(message)
            except Exception as exc:  # the user's predicate: report it instead of killing the handler
                raise _BadRequest(
                    500, "predicate_error", f"reject_messages predicate failed: {exc!r}"
                ) from exc
            if bad:
                raise _BadRequest(
                    400,
                    "invalid_request",
                    f"message {index} (messageId {message.get('messageId')!r}) is invalid; batch rejected",
                )


# ---------------------------------------------------------------------- helpers


def _error(code: str, message: str) -> dict[str, Any]:
    """Segment's error body shape; the SDK turns ``code``/``message`` into its ``APIError``."""
    return {"code": code, "message": message}


def _decode(raw: bytes, is_gzip: bool) -> dict[str, Any]:
    """Decompress (bounded, to survive gzip bombs), enforce the 500 KB limit and parse a JSON object."""
    if is_gzip:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                data = gz.read(MAX_BATCH_BYTES + 1)
        except (OSError, EOFError, ValueError) as exc:
            raise _BadRequest(400, "invalid_request", f"invalid gzip body: {exc}") from exc
    else:
        data = raw
    if len(data) > MAX_BATCH_BYTES:
        raise _BadRequest(400, "invalid_request", f"batch size exceeds {MAX_BATCH_BYTES} bytes")
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise _BadRequest(400, "invalid_request", f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _BadRequest(400, "invalid_request", "body must be a JSON object")
    return body


def _try_decode(raw: bytes, is_gzip: bool) -> dict[str, Any] | None:
    """Best-effort decode for requests we fail on purpose, so tests can inspect what was retried."""
    try:
        return _decode(raw, is_gzip)
    except _BadRequest:
        return None


def _messages_of(body: dict[str, Any], single_type: str | None) -> list[dict[str, Any]]:
    """The messages a request carries: ``batch`` for /v1/batch, the body itself for single endpoints."""
    if single_type is not None:
        message = dict(body)
        message.pop("writeKey", None)
        message.setdefault("type", single_type)  # Segment infers the type from the endpoint
        return [message]
    batch = body.get("batch")
    if not isinstance(batch, list) or not all(isinstance(m, dict) for m in batch):
        raise _BadRequest(400, "invalid_request", "'batch' must be a list of message objects")
    return list(batch)


def _respond(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: dict[str, Any],
    extra_headers: dict[str, str] | None = None,
    close: bool = False,
) -> None:
    """Write a JSON response with an exact Content-Length, which HTTP/1.1 keep-alive depends on."""
    data = json.dumps(payload).encode("utf-8")
    server = handler.server
    interim, decorations = server.receiver._decorations() if isinstance(server, _Server) else (None, {})
    if interim is not None:
        handler.send_response_only(interim)
        handler.end_headers()
    handler.send_response(status)
    for name, value in decorations.items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (extra_headers or {}).items():
        handler.send_header(name, value)
    if close:
        handler.send_header("Connection", "close")  # also sets handler.close_connection
    handler.end_headers()
    handler.wfile.write(data)


def _abort(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection abortively: SO_LINGER 0 makes close() send RST instead of FIN."""
    handler.close_connection = True
    conn = handler.connection
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile holds a reference on the socket (makefile); release it or close() would be deferred.
        handler.rfile.close()
        conn.close()


# ---------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run a receiver in the foreground until SIGTERM/SIGINT, then print a JSON summary line.

    Benchmarks start it as a subprocess, read the ``listening on URL`` line to learn the port, and read
    the summary to check how much arrived.
    """
    parser = argparse.ArgumentParser(
        prog="python tests/segment_receiver.py",
        description="Run a local Segment-compatible receiver (127.0.0.1) for tests and benchmarks.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (0 = any free port)")
    parser.add_argument("--write-key", default="test-write-key", help="write key to accept")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="exit by itself after this many seconds (safety net for scripts; default: run until signalled)",
    )
    args = parser.parse_args(argv)

    done = exit_signal_event()
    receiver = SegmentReceiver(write_key=args.write_key, port=args.port).start()
    print(f"listening on {receiver.url}", flush=True)
    try:
        wait_for_signal(args.max_seconds, done)
    finally:
        receiver.stop()
    summary = {"requests": len(receiver.requests), "messages": len(receiver.messages)}
    print(json.dumps(summary), flush=True)
    return 0


def exit_signal_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (installed before the server announces itself, so
    a script that signals as soon as it reads the address is never too early)."""
    done = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return done


def wait_for_signal(max_seconds: float | None, done: threading.Event | None = None) -> None:
    """Block until SIGTERM/SIGINT (``done``, from the handlers) or ``max_seconds`` passed:
    the life of a receiver run as a script."""
    done = done if done is not None else exit_signal_event()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    # Short bounded waits so the signal handler gets to run promptly and max_seconds is honoured.
    while not done.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            return


if __name__ == "__main__":
    sys.exit(main())
