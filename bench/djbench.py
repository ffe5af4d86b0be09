"""The minimal Django project the benchmarks measure, in process and under gunicorn.

Why one module for both: the in-process figures (``overhead.py`` parts 1 and 2) and the
real-server figures (part 3) must measure the *same* app, middleware and request, or the
comparison between them means nothing. So this module holds the hello-world view, the
"naive" reference middleware (what you would write in ten minutes with the official SDK),
the realistic browser request, and the settings; ``overhead.py`` and ``memory.py`` import
it, and gunicorn loads it as ``djbench:wsgi_app()`` with the stack picked by ``BENCH_STACK``.

No database, no templates: everything measured is the request cycle and the middleware.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import unquote

from django.urls import path

WRITE_KEY = "bench-key"

#: The path every measured request hits, and the one gunicorn readiness probes hit
#: (``/health`` is in SegmentMiddleware's default EXCLUDE_PATHS, so probes send nothing).
PAGE_PATH = "/products/blue-widget/"
HEALTH_PATH = "/health"

#: A realistic returning visitor: analytics.js's quoted ``ajs_anonymous_id`` among the usual
#: cookies, campaign parameters in the query, a search-engine referrer.
ANONYMOUS_ID = "5f1c7a2e-8d3b-4c6e-9a71-2b0f4e6d8c13"
QUERY = "utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale&utm_content=hero&ref=home"
HEADERS: dict[str, str] = {
    "Host": "shop.example.com",
    "User-Agent": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9,fr;q=0.8",
    "Accept-Encoding": "gzip, deflate, br",
    "Referer": "https://www.google.com/search?q=blue+widgets&client=safari",
    "Cookie": (
        "_ga=GA1.1.1234567890.1700000000; _gid=GA1.1.987654321.1700000000; "
        "ajs_user_id=null; "
        f"ajs_anonymous_id=%22{ANONYMOUS_ID}%22; "
        "csrftoken=Qm9vZ2llV29vZ2llQm9vZ2llV29vZ2llQm9vZ2ll; "
        "_fbp=fb.1.1700000000000.1234567890; theme=dark; cart=3"
    ),
}

BASE_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
AUTH_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
OURS = "segment_middleware.django.SegmentMiddleware"
NAIVE = "djbench.NaiveSegmentMiddleware"

#: Stack name -> MIDDLEWARE. "+auth" variants add sessions (signed cookies, no DB) and auth.
STACKS: dict[str, list[str]] = {
    "bare": BASE_MIDDLEWARE,
    "ours": [*BASE_MIDDLEWARE, OURS],
    "naive": [*BASE_MIDDLEWARE, NAIVE],
    "bare+auth": [*BASE_MIDDLEWARE, *AUTH_MIDDLEWARE],
    "ours+auth": [*BASE_MIDDLEWARE, *AUTH_MIDDLEWARE, OURS],
    "naive+auth": [*BASE_MIDDLEWARE, *AUTH_MIDDLEWARE, NAIVE],
}


# ---------------------------------------------------------------------- the app
def hello(request: Any, slug: str) -> Any:
    from django.http import HttpResponse

    return HttpResponse(b"hello world", content_type="text/plain")


def health(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(b"ok", content_type="text/plain")


#: ROOT_URLCONF is this module.
urlpatterns = [path("products/<slug:slug>/", hello, name="product"), path("health", health, name="health")]


def configure(
    segment: Mapping[str, Any] | None = None,
    naive_host: str | None = None,
    middleware: Sequence[str] = BASE_MIDDLEWARE,
) -> None:
    """``settings.configure`` + ``django.setup`` for this module's app (once per process)."""
    import django
    from django.conf import settings

    if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    segment = dict(segment or {})
    # Never spool into the project's own .segment/ store: a bench gets a throwaway one.
    if "LOCAL_STORE" not in segment:
        segment["LOCAL_STORE"] = os.path.join(tempfile.mkdtemp(prefix="segment-bench-"), "events.sqlite3")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-secret",
        ALLOWED_HOSTS=["shop.example.com", "127.0.0.1", "localhost"],
        ROOT_URLCONF="djbench",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"],
        MIDDLEWARE=list(middleware),
        DATABASES={},
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        LOGGING_CONFIG=None,
        SEGMENT=segment,
        BENCH_NAIVE_HOST=naive_host,
    )
    django.setup()


def build_handler(middleware: Sequence[str]) -> Any:
    """A WSGIHandler with its own middleware chain (settings.MIDDLEWARE is read at build)."""
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    saved = settings.MIDDLEWARE
    settings.MIDDLEWARE = list(middleware)
    try:
        return WSGIHandler()
    finally:
        settings.MIDDLEWARE = saved


def wsgi_app() -> Any:
    """gunicorn entry point (``djbench:wsgi_app()``), configured from the environment:
    BENCH_STACK (a key of STACKS), BENCH_HOST (receiver URL), BENCH_LOCAL_STORE."""
    stack = os.environ.get("BENCH_STACK", "bare")
    host = os.environ.get("BENCH_HOST")
    segment: dict[str, Any] = {"WRITE_KEY": WRITE_KEY, "HOST": host} if host else {}
    if os.environ.get("BENCH_LOCAL_STORE"):
        segment["LOCAL_STORE"] = os.environ["BENCH_LOCAL_STORE"]
    configure(segment, naive_host=host, middleware=STACKS[stack])
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


# ---------------------------------------------------------------------- requests
def environ(
    path: str = PAGE_PATH, query: str = QUERY, headers: Mapping[str, str] = HEADERS
) -> dict[str, Any]:
    """The WSGI environ a server would hand Django for one browser GET (copy it per call)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
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
    for name, value in headers.items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def make_caller(handler: Any, env: Mapping[str, Any]) -> Callable[[], int]:
    """One request through ``handler`` as a WSGI server does it: fresh environ and input,
    start_response, drain the body, close (which fires request_finished). Returns the status."""
    status_box: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status_box.append(status)
        return None

    base = dict(env)
    bytes_io = io.BytesIO

    def call() -> int:
        e = base.copy()
        e["wsgi.input"] = bytes_io(b"")
        status_box.clear()
        response = handler(e, start_response)
        try:
            for _ in response:
                pass
        finally:
            response.close()
        return int(status_box[0][:3])

    return call


def run_requests(call: Callable[[], int], n: int) -> None:
    """``n`` requests, failing loudly on anything but 200 (a broken stack is not fast)."""
    for _ in range(n):
        if call() != 200:
            raise RuntimeError("benchmark request did not return 200")


# ---------------------------------------------------------------------- the naive reference
_CAMPAIGN = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}
_client: Any = None


def naive_client(host: str | None = None) -> Any:
    """One official-SDK Client per process, as its README suggests (built lazily).

    Every bench process measures one framework, so one client (pointed at ``host``, or at
    Django's ``BENCH_NAIVE_HOST``) is all the naive reference ever needs.
    """
    global _client
    if _client is None:
        from segment.analytics import Client

        if host is None:
            from django.conf import settings

            host = settings.BENCH_NAIVE_HOST
        _client = Client(WRITE_KEY, host=host, on_error=_count_sdk_error)
    return _client


sdk_errors: list[int] = [0]


def _count_sdk_error(exc: Exception, batch: Iterable[Any]) -> None:
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


class NaiveSegmentMiddleware:
    """What a straightforward integration does: build the whole page message in the request
    (absolute URL, parsed cookies and query, context) and call the SDK's ``page()`` inline.

    It is deliberately not a strawman: no redaction, no cookie for new visitors, no IP
    proxy handling - strictly less work than SegmentMiddleware does in total.
    """

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.client = naive_client()

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if request.path.startswith(HEALTH_PATH):  # the same exclusion SegmentMiddleware makes
            return response
        raw_id = request.COOKIES.get("ajs_anonymous_id") or ""
        anonymous_id = unquote(raw_id).strip('"') or str(uuid.uuid4())
        user = getattr(request, "user", None)
        user_id = str(user.pk) if user is not None and user.is_authenticated else None
        meta = request.META
        url = request.build_absolute_uri()
        query = request.GET
        search = "?" + meta["QUERY_STRING"] if meta.get("QUERY_STRING") else ""
        page = {"path": request.path, "url": url, "referrer": meta.get("HTTP_REFERER", ""), "search": search}
        context: dict[str, Any] = {
            "ip": meta.get("REMOTE_ADDR"),
            "userAgent": meta.get("HTTP_USER_AGENT", ""),
            "locale": meta.get("HTTP_ACCEPT_LANGUAGE", "").split(",")[0].split(";")[0] or None,
            "page": page,
            "campaign": {name: query[key] for key, name in _CAMPAIGN.items() if key in query},
        }
        match = request.resolver_match
        self.client.page(
            user_id=user_id,
            anonymous_id=anonymous_id,
            name=match.view_name if match is not None else request.path,
            properties={**page, "method": request.method, "status": response.status_code},
            context=context,
        )
        return response


class RoundTime(NamedTuple):
    """One round of one stack, per request (µs)."""

    wall_us: float  # the loop's wall time, plus the CPU of the flush that delivers its rest
    cpu_us: float  # process CPU (all threads: sender or SDK consumer too), loop and flush


def timed_round(
    call: Callable[[], int], n: int, times: list[int], label: str, deliver: Callable[[], None] | None = None
) -> RoundTime:
    """``n`` calls, each timed into ``times`` (ns); the round's means.

    ``deliver`` (the stack's flush) runs after the loop and its CPU time is added to the
    round (see :func:`delivery_cpu_ns`). gc is collected before the round, the same for
    every stack, and stays enabled inside.
    """
    import gc

    pc = time.perf_counter_ns
    gc.collect()
    cpu = time.process_time_ns()
    start = pc()
    for _ in range(n):
        t0 = pc()
        status = call()
        times.append(pc() - t0)
        if status != 200:
            raise RuntimeError(f"{label}: status {status}")
    elapsed = pc() - start
    cpu = time.process_time_ns() - cpu
    if deliver is not None:
        spent = delivery_cpu_ns(deliver)
        elapsed += spent
        cpu += spent
    return RoundTime(elapsed / n / 1000, cpu / n / 1000)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize_stack(rounds: Sequence[RoundTime], singles: Sequence[int]) -> dict[str, Any]:
    """One stack's figures: medians over rounds of the round means (wall with the flush's
    CPU, and process CPU of all threads), and percentiles of single requests (ns in)."""
    nan = float("nan")
    return {
        "median_round_mean_us": statistics.median(r.wall_us for r in rounds) if rounds else nan,
        "round_means_us": [round(r.wall_us, 2) for r in rounds],
        "median_round_cpu_us": statistics.median(r.cpu_us for r in rounds) if rounds else nan,
        "round_cpu_us": [round(r.cpu_us, 2) for r in rounds],
        "p50_us": pct(singles, 50) / 1000,
        "p90_us": pct(singles, 90) / 1000,
        "p99_us": pct(singles, 99) / 1000,
    }


def delivery_cpu_ns(deliver: Callable[[], None]) -> int:
    """The process CPU (all threads) that ``deliver`` (a flush) costs, in ns.

    Added to a round's time so that the round pays for delivering every message it made:
    a sender that left messages queued when the loop ended does not get that work for free
    after the clock stops. CPU, not wall time: the SDK's consumer holds a partial batch
    until its 0.5 s upload interval passes, and idle waiting is not a cost of the request.
    """
    c0 = time.process_time_ns()
    deliver()
    return time.process_time_ns() - c0
