"""What the four benchmarks share: the measured Django app, the receiver, CPU and statistics.

Why one module: the in-process figures (``overhead.py``) and the real-server figures
(``load.py``) must measure the *same* app, middleware and browser request, or comparing
them means nothing; and every script needs the same receiver (the test suite's
``tests/segment_receiver.py``, in a process of its own so its CPU is not the measured
process's), the same percentile and the same way of printing a table.

The app is a hello-world view on ``/products/<slug>/`` with no database and no templates.
"bare" is the app alone, "ours" adds ``SegmentMiddleware``, "naive" adds
:class:`NaiveSegmentMiddleware` (what a ten-minute integration with the official SDK does:
build the page message in the request and call ``page()`` inline). ``+auth`` stacks add
sessions (signed cookies) and ``AuthenticationMiddleware``. gunicorn loads it as
``common:wsgi_app()`` with the stack in ``BENCH_STACK``.

The ``collect`` stack is ``ours+auth`` with the first-party collection routes mounted under
``/segment/`` and a plain JSON view that does nothing (``POST /api/noop``, excluded from
tracking, so it is the framework's own cost of a request). :func:`starlette_app` is the same
for Starlette under uvicorn, :func:`django_asgi_app` the Django one under uvicorn.

``python bench/common.py receiver ...`` is the receiver process (see :class:`Receiver`).
Nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import http.client
import io
import json
import os
import re
import select
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
WRITE_KEY = "bench-key"

#: The tracked path, and the readiness probe's (``/health`` is excluded by default: no page call).
PAGE_PATH = "/products/blue-widget/"
HEALTH_PATH = "/health"
ANONYMOUS_ID = "5f1c7a2e-8d3b-4c6e-9a71-2b0f4e6d8c13"
QUERY = "utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale&utm_content=hero&ref=home"
#: A returning visitor: analytics.js's quoted ``ajs_anonymous_id`` among the usual cookies.
HEADERS: dict[str, str] = {
    "Host": "shop.example.com",
    "User-Agent": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9,fr;q=0.8",
    "Referer": "https://www.google.com/search?q=blue+widgets",
    "Cookie": (
        "_ga=GA1.1.1234567890.1700000000; ajs_user_id=null; "
        f"ajs_anonymous_id=%22{ANONYMOUS_ID}%22; csrftoken=Qm9vZ2llV29vZ2llQm9vZ2ll; theme=dark"
    ),
}
CAMPAIGN = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- statistics and tables
def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted sequence; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def ratio(added: float, base: float) -> float:
    """``added / base``, infinite when the base added nothing (never a ZeroDivisionError)."""
    return added / base if base > 0 else float("inf")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "  ") -> str:
    """A plain-text table, numbers right-aligned, floats with one decimal."""
    cells = [[f"{c:.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        indent
        + "  ".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    for row in cells:
        lines.append(
            indent
            + "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- CPU and memory of processes
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int, main_thread: bool = False) -> list[str]:
    """``/proc/<pid>/stat`` (or its main thread's) after the command name (which may hold spaces)."""
    with open(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2 :].split()


def cpu_seconds(pids: Iterable[int], *, main_thread: bool = False) -> float:
    """utime + stime of every thread of these processes, living or exited, in seconds; with
    ``main_thread``, of each one's main thread only (``/proc/<pid>/task/<pid>/stat``), the
    one a sync gunicorn worker serves its requests on."""
    ticks = 0
    for pid in pids:
        f = _stat_fields(pid, main_thread)
        ticks += int(f[11]) + int(f[12])
    return ticks / CLK_TCK


def children_of(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (scans ``/proc``)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(_stat_fields(int(name))[1]) == parent:
                    out.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return sorted(out)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def rss_mb() -> float:
    """This process's resident set size (VmRSS), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, read, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- the receiver
def make_cert(directory: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (``openssl``), as the TLS tests make one:
    the client trusts it through ``REQUESTS_CA_BUNDLE``. Returns (cert, key) paths."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", key]
    argv += ["-out", cert, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _receiver_summary(receiver: Any) -> dict[str, Any]:
    msgs = receiver.messages
    paths = collections.Counter(_page_path(m) for m in msgs)
    return {
        "requests": len(receiver.requests),
        "messages": len(msgs),
        "message_ids": len({m.get("messageId") for m in msgs}),
        "types": dict(collections.Counter(m.get("type") for m in msgs)),
        "paths": dict(paths),
        "kind": "lean" if isinstance(receiver, LeanReceiver) else "suite",
    }


def _page_path(message: dict[str, Any]) -> Any:
    return ((message.get("context") or {}).get("page") or {}).get("path")


def _page_only(message: dict[str, Any]) -> dict[str, Any]:
    return {"page": {"path": _page_path(message)}}


class LeanReceiver:
    """A receiver that costs the shared cores next to nothing while the workers are timed,
    for ``--receiver lean``: Segment's API runs on Segment's machines, while this
    benchmark's receiver shares the measured workers' two cores. The suite's receiver
    (``http.server``, every message validated as Segment would) costs ~10-15 µs of CPU per
    message as it arrives; this one, a bare asyncio protocol, checks the write key and the
    framing, answers, and keeps the body as bytes. It parses them when the benchmark asks
    (``wait_for``, ``messages``: between timed phases) and keeps what the benchmark checks
    (messageIds, types, page paths). Same summary as the suite's (``_receiver_summary``)."""

    def __init__(self, write_key: str, port: int, tls: ssl.SSLContext | None) -> None:
        self._parsed: list[dict[str, Any]] = []
        self._bodies: list[bytes] = []  # received, not yet parsed
        self.requests: list[int] = []
        self._changed = threading.Condition()
        self._auth = b"authorization: basic " + base64.b64encode(f"{write_key}:".encode()).lower()
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _LeanProtocol(self), "127.0.0.1", port, ssl=tls)
        )
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def start(self) -> LeanReceiver:
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        return self

    def take(self, head: bytes, body: bytes) -> bool:
        """One request: False when its write key is wrong."""
        if self._auth not in head.lower():
            return False
        with self._changed:
            self._bodies.append(body)
            self._changed.notify_all()
        return True

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._changed:
            self._parse()
            return self._parsed

    def _parse(self) -> None:
        """The bodies received so far into kept messages (the caller holds the lock)."""
        bodies, self._bodies = self._bodies, []
        for body in bodies:
            batch = orjson.loads(body).get("batch") or []
            self.requests.append(len(batch))
            self._parsed.extend(
                {"messageId": m.get("messageId"), "type": m.get("type"), "context": _page_only(m)}
                for m in batch
            )

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._parse()
                left = deadline - time.monotonic()
                if len(self._parsed) >= n or left <= 0:
                    return
                self._changed.wait(left)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)


class _LeanProtocol(asyncio.Protocol):
    """HTTP/1.1 requests with a Content-Length, kept alive; what the sender sends, no more."""

    OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"success":true}'
    DENIED = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, receiver: LeanReceiver) -> None:
        self.receiver = receiver
        self.buffer = b""
        self.head: bytes | None = None
        self.length = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.head is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", self.head)
                self.length = int(found.group(1)) if found else 0
            if len(self.buffer) < self.length:
                return
            body, self.buffer = self.buffer[: self.length], self.buffer[self.length :]
            head, self.head = self.head, None
            self.transport.write(self.OK if self.receiver.take(head, body) else self.DENIED)


def receiver_main(argv: Sequence[str]) -> int:
    """The receiver process: ``tests/segment_receiver.py``'s ``SegmentReceiver`` (or, with
    ``--lean``, :class:`LeanReceiver`), driven by lines on stdin so the benchmark waits on its
    condition, never polls with sleeps: ``wait N SECONDS`` answers once N messages arrived
    (or the time is up) with the count; ``summary`` answers the counts by type, messageId and
    path; EOF stops it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from segment_receiver import SegmentReceiver

    parser = argparse.ArgumentParser(prog="common.py receiver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--write-key", default=WRITE_KEY)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--lean", action="store_true", help="count only (LeanReceiver)")
    args = parser.parse_args(argv)
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
    receiver: Any
    if args.lean:
        receiver = LeanReceiver(args.write_key, args.port, context).start()
    else:
        receiver = SegmentReceiver(write_key=args.write_key, port=args.port, tls=context).start()
    print(f"listening on {receiver.url}", flush=True)
    try:
        for line in sys.stdin:
            cmd = line.split()
            if cmd[:1] == ["wait"]:
                with contextlib.suppress(AssertionError):  # the caller compares the count it gets
                    receiver.wait_for(int(cmd[1]), timeout=float(cmd[2]))
                print(json.dumps({"messages": len(receiver.messages)}), flush=True)
            elif cmd[:1] == ["summary"]:
                print(json.dumps(_receiver_summary(receiver)), flush=True)
    finally:
        receiver.stop()
    return 0


#: ``--receiver lean`` of the scripts sets it: every Receiver made after is a LeanReceiver.
LEAN_RECEIVER = False


class Receiver:
    """The test suite's receiver (or the lean one) in a process of its own on 127.0.0.1,
    plain or TLS."""

    def __init__(
        self,
        tls: tuple[str, str] | None = None,
        port: int = 0,
        write_key: str = WRITE_KEY,
        lean: bool | None = None,
    ) -> None:
        if lean is None:  # read now, not when this module was imported: main() sets it later
            lean = LEAN_RECEIVER
        argv = [sys.executable, __file__, "receiver", "--port", str(port), "--write-key", write_key]
        argv += ["--tls", *tls] if tls else []
        argv += ["--lean"] if lean else []
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self._read(20.0)
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"receiver did not start (got {line!r})")
        self.url = line.split("listening on ", 1)[1].strip()

    def _read(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def _ask(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self._read(timeout + 10)
        if not line:
            raise RuntimeError(f"receiver did not answer {command!r}")
        return json.loads(line)  # type: ignore[no-any-return]

    def wait_for(self, n: int, timeout: float = 15.0) -> int:
        """Block until ``n`` messages arrived or ``timeout`` passed; the count received."""
        return int(self._ask(f"wait {n} {timeout}", timeout)["messages"])

    def summary(self) -> dict[str, Any]:
        """``{requests, messages, message_ids, types, paths}`` of everything received."""
        return self._ask("summary", 30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def one_page_per_request(summary: Mapping[str, Any], sent: int, call: str = "page") -> bool:
    """Exactly one page call per tracked request (or ``call``, one per event posted):
    count, type, distinct messageIds, path."""
    return (
        summary.get("messages") == sent
        and summary.get("types") == ({call: sent} if sent else {})
        and summary.get("message_ids") == sent
        and summary.get("paths") == ({PAGE_PATH: sent} if sent else {})
    )


# ---------------------------------------------------------------------- the official SDK
_client: Any = None
sdk_errors = [0]


def naive_client(host: str | None = None) -> Any:
    """One official-SDK ``Client`` per process, as its README suggests (built lazily)."""
    global _client
    if _client is None:
        from segment.analytics import Client

        if host is None:
            from django.conf import settings

            host = settings.BENCH_NAIVE_HOST
        _client = Client(WRITE_KEY, host=host, on_error=lambda exc, batch: _count_error(batch))
    return _client


def _count_error(batch: Iterable[Any]) -> None:
    sdk_errors[0] += len(list(batch))


def sdk_flush(client: Any, timeout: float) -> bool:
    """``Client.flush()`` is ``queue.join()`` with no bound; this is the same wait, bounded."""
    q = client.queue
    deadline = time.monotonic() + timeout
    with q.all_tasks_done:
        while q.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            q.all_tasks_done.wait(remaining)
    return True


def naive_context(page: dict[str, str], ip: str | None, headers: Any, query: Any) -> dict[str, Any]:
    """The context a straightforward integration builds (the same in every framework)."""
    return {
        "ip": ip,
        "userAgent": headers.get("User-Agent", ""),
        "locale": headers.get("Accept-Language", "").split(",")[0].split(";")[0] or None,
        "page": page,
        "campaign": {name: query[key] for key, name in CAMPAIGN.items() if key in query},
    }


def anonymous_id_of(cookie: str | None) -> str:
    return unquote(cookie or "").strip('"') or str(uuid.uuid4())


# ---------------------------------------------------------------------- the Django app
BASE_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
AUTH_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
OURS = "segment_middleware.django.SegmentMiddleware"
NAIVE = "common.NaiveSegmentMiddleware"
STACKS: dict[str, list[str]] = {
    "bare": BASE_MIDDLEWARE,
    "ours": [*BASE_MIDDLEWARE, OURS],
    "naive": [*BASE_MIDDLEWARE, NAIVE],
    "bare+auth": [*BASE_MIDDLEWARE, *AUTH_MIDDLEWARE],
    "ours+auth": [*BASE_MIDDLEWARE, *AUTH_MIDDLEWARE, OURS],
    "naive+auth": [*BASE_MIDDLEWARE, *AUTH_MIDDLEWARE, NAIVE],
    "collect": [*BASE_MIDDLEWARE, *AUTH_MIDDLEWARE, OURS],
}
#: The collection routes' mount, and the empty JSON view they are compared with.
COLLECT_MOUNT = "/segment/"
NOOP_PATH = "/api/noop"
#: The ``collect`` stack's settings besides the key and host: the empty view untracked; a
#: rate limit no benchmark reaches (the limiter still runs for every request: one visitor
#: posts everything).
COLLECT_SEGMENT: dict[str, Any] = {
    "EXCLUDE_PATHS": [HEALTH_PATH, NOOP_PATH],
    "COLLECT_RATE_LIMIT": "1000000/s burst 1000000",
}


def hello(request: Any, slug: str) -> Any:
    from django.http import HttpResponse

    return HttpResponse(b"hello world", content_type="text/plain")


def health(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(b"ok", content_type="text/plain")


def noop(request: Any) -> Any:
    """The plain JSON view that does nothing (the ``collect`` stack's baseline)."""
    from django.http import JsonResponse

    return JsonResponse({"success": True})


def _urlpatterns() -> list[Any]:
    from django.conf import settings
    from django.urls import include, path
    from django.views.decorators.csrf import csrf_exempt

    patterns: list[Any] = [
        path("products/<slug:slug>/", hello, name="product"),
        path("health", health, name="health"),
    ]
    if getattr(settings, "BENCH_COLLECT", False):
        patterns += [
            path(NOOP_PATH.lstrip("/"), csrf_exempt(noop), name="noop"),
            path(COLLECT_MOUNT.lstrip("/"), include("segment_middleware.django.urls")),
        ]
    return patterns


def __getattr__(name: str) -> Any:
    """``urlpatterns`` (this module is ROOT_URLCONF), built when Django first asks."""
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def configure_django(
    segment: Mapping[str, Any],
    naive_host: str | None = None,
    middleware: Sequence[str] = BASE_MIDDLEWARE,
    collect: bool = False,
) -> None:
    """``settings.configure`` + ``django.setup`` for the app (once per process); a throwaway
    ``LOCAL_STORE`` unless one is given, never the project's own ``.segment/``; ``collect``
    mounts the collection routes and the empty JSON view."""
    import django
    from django.conf import settings

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    segment = dict(segment)
    segment.setdefault(
        "LOCAL_STORE", os.path.join(tempfile.mkdtemp(prefix="segment-bench-"), "events.sqlite3")
    )
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-secret",
        ALLOWED_HOSTS=["shop.example.com", "127.0.0.1", "localhost"],
        ROOT_URLCONF="common",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"],
        MIDDLEWARE=list(middleware),
        DATABASES={},
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        LOGGING_CONFIG=None,
        SEGMENT=segment,
        BENCH_NAIVE_HOST=naive_host,
        BENCH_COLLECT=collect,
    )
    django.setup()


def django_handler(middleware: Sequence[str]) -> Any:
    """A WSGIHandler with its own middleware chain (``MIDDLEWARE`` is read when it is built)."""
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    saved = settings.MIDDLEWARE
    settings.MIDDLEWARE = list(middleware)
    try:
        return WSGIHandler()
    finally:
        settings.MIDDLEWARE = saved


def _configure_from_env() -> None:
    """The Django app of ``BENCH_STACK`` (a key of STACKS), posting to ``BENCH_HOST`` (the
    receiver's URL), its store at ``BENCH_LOCAL_STORE``."""
    stack = os.environ.get("BENCH_STACK", "bare")
    host = os.environ.get("BENCH_HOST")
    segment: dict[str, Any] = {"WRITE_KEY": WRITE_KEY, "HOST": host} if host else {}
    if os.environ.get("BENCH_LOCAL_STORE"):
        segment["LOCAL_STORE"] = os.environ["BENCH_LOCAL_STORE"]
    if stack == "collect":
        segment.update(COLLECT_SEGMENT)
    configure_django(segment, naive_host=host, middleware=STACKS[stack], collect=stack == "collect")
    import segment_middleware

    # The server's log says which package it runs (load.py --before checks it).
    print(f"{PACKAGE_LINE}{Path(segment_middleware.__file__).parent.parent}", file=sys.stderr, flush=True)


def wsgi_app() -> Any:
    """gunicorn's entry point (``common:wsgi_app()``), configured from the environment."""
    _configure_from_env()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def django_asgi_app() -> Any:
    """uvicorn's entry point for the Django app (``--factory common:django_asgi_app``)."""
    _configure_from_env()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def starlette_app() -> Any:
    """uvicorn's entry point for Starlette (``--factory common:starlette_app``): the
    ``collect`` stack's routes (the mount, the empty JSON view, ``/health``) behind the
    package's ``SegmentMiddleware`` with the same settings."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Mount, Route

    from segment_middleware.asgi import SegmentMiddleware, collect_router

    async def noop(request: Any) -> Any:
        return JSONResponse({"success": True})

    async def health(request: Any) -> Any:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route(HEALTH_PATH, health),
            Route(NOOP_PATH, noop, methods=["POST"]),
            Mount(COLLECT_MOUNT.rstrip("/"), app=collect_router),
        ]
    )
    settings = {k.lower(): v for k, v in COLLECT_SEGMENT.items()}
    if os.environ.get("BENCH_HOST"):
        settings.update(write_key=WRITE_KEY, host=os.environ["BENCH_HOST"])
    store = os.environ.get("BENCH_LOCAL_STORE")
    settings["local_store"] = store or os.path.join(
        tempfile.mkdtemp(prefix="segment-bench-"), "events.sqlite3"
    )
    app.add_middleware(SegmentMiddleware, **settings)
    return app


def environ() -> dict[str, Any]:
    """The WSGI environ a server hands the app for the browser GET (copy it per call)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": PAGE_PATH,
        "QUERY_STRING": QUERY,
        "SERVER_NAME": "shop.example.com",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "REMOTE_PORT": "51234",
        "CONTENT_LENGTH": "",
        "CONTENT_TYPE": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in HEADERS.items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def wsgi_caller(app: Any) -> Callable[[], int]:
    """One request through a WSGI app as a server makes it (fresh environ and input, body
    drained, ``close()`` called, which fires Django's request_finished); the status."""
    status_box: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status_box.append(status)

    base = environ()

    def call() -> int:
        e = base.copy()
        e["wsgi.input"] = io.BytesIO(b"")
        status_box.clear()
        response = app(e, start_response)
        try:
            for _ in response:
                pass
        finally:
            if hasattr(response, "close"):
                response.close()
        return int(status_box[0][:3])

    return call


class NaiveSegmentMiddleware:
    """A straightforward Django integration: build the page message in the request and call
    the SDK's ``page()`` inline. Not a strawman: no redaction, no cookie for new visitors,
    no proxy handling, strictly less work than SegmentMiddleware does in total."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.client = naive_client()

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if request.path.startswith(HEALTH_PATH):  # the exclusion SegmentMiddleware makes
            return response
        user = getattr(request, "user", None)
        user_id = str(user.pk) if user is not None and user.is_authenticated else None
        meta = request.META
        search = "?" + meta["QUERY_STRING"] if meta.get("QUERY_STRING") else ""
        page = {
            "path": request.path,
            "url": request.build_absolute_uri(),
            "referrer": meta.get("HTTP_REFERER", ""),
            "search": search,
        }
        match = request.resolver_match
        self.client.page(
            user_id=user_id,
            anonymous_id=anonymous_id_of(request.COOKIES.get("ajs_anonymous_id")),
            name=match.view_name if match is not None else request.path,
            properties={**page, "method": request.method, "status": response.status_code},
            context=naive_context(page, meta.get("REMOTE_ADDR"), request.headers, request.GET),
        )
        return response


# ---------------------------------------------------------------------- gunicorn and uvicorn
PACKAGE_LINE = "bench: segment_middleware from "


def check_package_from(server: Gunicorn, path: str) -> None:
    """RuntimeError unless every worker of ``server`` that has said so imported the package
    from under ``path`` (a stale install earlier on the path would measure the wrong code)."""
    lines = [line for line in Path(server.log_path).read_text().splitlines() if line.startswith(PACKAGE_LINE)]
    found = {line[len(PACKAGE_LINE) :] for line in lines}
    if not lines or found != {str(Path(path))}:
        raise RuntimeError(f"{server.stack}: the package came from {sorted(found)}, not {path}")


@dataclass
class Gunicorn:
    """gunicorn serving ``app`` (``common:wsgi_app()``: the Django app) with one stack;
    ``worker_class`` ``sync`` or ``gthread`` (with ``threads`` each)."""

    stack: str
    host: str | None
    workdir: str
    workers: int = 2
    env: Mapping[str, str] | None = None
    worker_class: str = "sync"
    threads: int = 1
    app: str = "common:wsgi_app()"
    #: First on the workers' path (gunicorn puts its working directory, the checkout, ahead
    #: of PYTHONPATH): ``load.py --before``'s older package.
    pythonpath: str | None = None

    def _argv(self) -> list[str]:
        argv = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
        argv += ["--worker-class", self.worker_class, "--graceful-timeout", "20", "--log-level", "warning"]
        if self.worker_class == "gthread":
            argv += ["--threads", str(self.threads)]
        if self.pythonpath:
            argv += ["--pythonpath", self.pythonpath]
        return [*argv, "--chdir", str(HERE), self.app]

    def __post_init__(self) -> None:
        self.port = free_port()
        name = self.stack.replace("+", "-")
        env = {**os.environ, **(self.env or {}), "BENCH_STACK": self.stack, "PYTHONUNBUFFERED": "1"}
        env.pop("BENCH_HOST", None)
        if self.host:
            env["BENCH_HOST"] = self.host
        env["BENCH_LOCAL_STORE"] = os.path.join(self.workdir, f"{name}-{self.port}.sqlite3")
        argv = self._argv()
        self.server = Path(argv[0]).name
        self.log_path = os.path.join(self.workdir, f"{self.server}-{name}-{self.port}.log")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def worker_pids(self) -> list[int]:
        """The workers: the server's children, less multiprocessing's resource tracker
        (uvicorn's spawned workers start one)."""
        return [pid for pid in children_of(self.proc.pid) if b"resource_tracker" not in _cmdline(pid)]

    def wait_ready(self, timeout: float = 30.0) -> list[int]:
        """Until ``/health`` answers 200 and every worker is up; the workers' pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server} {self.stack} exited early; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", HEALTH_PATH)
                ok = conn.getresponse().status == 200
                conn.close()
                workers = self.worker_pids()
                if ok and len(workers) == self.workers:
                    return workers
            except OSError:
                pass
            time.sleep(0.1)  # start-up poll: the server has no other way to say it is ready
        raise RuntimeError(f"{self.server} {self.stack} not ready after {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the workers flush within SHUTDOWN_TIMEOUT) and wait, bounded."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


@dataclass
class Uvicorn(Gunicorn):
    """uvicorn (asyncio, h11: what a plain ``pip install uvicorn`` runs) serving the factory
    ``app`` (``common:starlette_app``, ``common:django_asgi_app``); its workers are the
    supervisor's children, as gunicorn's are."""

    app: str = "common:starlette_app"

    def _argv(self) -> list[str]:
        argv = [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]
        argv += [
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "20",
        ]
        return [*argv, "--app-dir", str(HERE), "--factory", self.app]


def versions() -> dict[str, Any]:
    """What the figures were measured with."""
    import platform

    import segment.analytics.version as sdk_version

    return {
        "python": platform.python_version(),
        "sdk": sdk_version.VERSION,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["receiver"]:
        sys.exit(receiver_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} receiver [--port P] [--write-key K] [--tls CERT KEY]")
