"""Hostile requests on every adapter: the middleware never raises, never changes the app's
answer, and never sends a message Segment would refuse.

Hypothesis draws the method, the path, the query string, the cookies (the anonymousId's
in every form, and garbage) and the headers the middleware reads (User-Agent, Referer,
Accept-Language, X-Forwarded-For, X-Anonymous-Id, Host, Cookie), as bytes: non-UTF-8,
control characters, CR/LF, values of up to 40 KB. Each request goes to the adapter's app
in process, through the framework's own entry point with a raw WSGI environ or ASGI scope
(Django's ``WSGIHandler`` and ``ASGIHandler``, Flask's ``app``, the plain WSGI and ASGI
middlewares), so every byte arrives as a server could hand it over. The app's one route
answers 200 for any path; the same request to the app without the middleware gives the
status to compare with. ``testing.capture()`` collects what would be sent.

Per request: no exception out of the call; the status is the bare app's; at most one page
call, exactly one when the app answered 200 (no header here opts out); every message
within 32 KB as Segment receives it (``messages.prepare`` drops bigger ones, logging an
error: no error may be logged); no control character in the fields copied from the
request; the ``Set-Cookie`` we add is RFC 6265 cookie-octets only. The first-party
collection routes have their own property test (test_collect_fuzz.py).

``EXAMPLES`` requests per adapter (200): 1.5-3.5 s each on the 2-core machine (run with
``-s`` to see each adapter's count and time).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

pytest.importorskip("django")
pytest.importorskip("flask")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

from django.test import override_settings  # noqa: E402
from helpers import WRITE_KEY  # noqa: E402

from segment_middleware.testing import capture  # noqa: E402

EXAMPLES = 200
MAX_MESSAGE_BYTES = 32 * 1024
SETTINGS = {
    "write_key": WRITE_KEY,
    "host": "http://127.0.0.1:9",  # never reached: capture() takes every message
    "include_query_params": True,  # the biggest page call
    "trusted_proxies": ["127.0.0.0/8"],  # X-Forwarded-For is parsed
}
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
COOKIE_VALUE = re.compile(r"^ajs_anonymous_id=%22[!#$%&'()*+\-./0-9:<=>?@A-Z\[\]^_`a-z{|}~]+%22(;|$)")


# ---------------------------------------------------------------------------- requests
@dataclass
class Req:
    method: str
    path: bytes  # after "/p/", so no EXCLUDE_PATHS prefix matches
    query: bytes
    headers: list[tuple[bytes, bytes]]  # lower-case names


def sized(n: int, alphabet: bytes = b"a") -> bytes:
    return (alphabet * (n // len(alphabet) + 1))[:n]


big = st.sampled_from([100, 1_000, 5_000, 33_000, 40_000])
nasty_bytes = (
    st.binary(max_size=60)
    | st.builds(sized, big)
    | st.builds(sized, big, st.sampled_from([b'"', b"\\\x00", b"\xff\xfe", b"\r\n", "é😀".encode()]))
)
ascii_bits = st.sampled_from(
    [
        b"utm_source=",
        b"utm_campaign=",
        b"&",
        b"=",
        b"%",
        b"%22",
        b"%0A",
        b"%FF",
        b"token=",
        b"+",
        b";",
        b"?",
        b"#",
        b"/",
        b"..",
    ]
)
query_bytes = st.lists(ascii_bits | nasty_bytes, max_size=8).map(b"".join)
path_bytes = st.lists(ascii_bits | st.binary(max_size=20) | st.builds(sized, big), max_size=6).map(b"".join)

anonymous_ids = (
    st.sampled_from(
        [b"%22abc-123%22", b"abc-123", b'"abc"', b"%22%22", b"%2", b"%22" + sized(200) + b"%22", b"\x00", b""]
    )
    | nasty_bytes
)
cookie_header = (
    st.builds(
        lambda anon, junk: b"; ".join([b"ajs_anonymous_id=" + anon, *junk]),
        anonymous_ids,
        st.lists(nasty_bytes, max_size=3),
    )
    | nasty_bytes
)
NAMES = [
    b"user-agent",
    b"referer",
    b"accept-language",
    b"x-forwarded-for",
    b"x-anonymous-id",
    b"host",
    b"cookie",
]
header_values = {
    b"cookie": cookie_header,
    b"x-anonymous-id": anonymous_ids,
    b"referer": st.builds(lambda q: b"https://r.example/?" + q, query_bytes) | nasty_bytes,
    b"x-forwarded-for": st.lists(
        st.sampled_from([b"10.0.0.1", b"127.0.0.1", b"[::1]:80", b"junk"]) | nasty_bytes, max_size=5
    ).map(b", ".join),
}
header = st.sampled_from(NAMES).flatmap(
    lambda name: st.tuples(st.just(name), header_values.get(name, nasty_bytes))
)
requests = st.builds(
    Req,
    st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "DELETE"]),
    path_bytes,
    query_bytes,
    st.lists(header, max_size=6),
)


# ---------------------------------------------------------------------------- the apps
@dataclass
class Answer:
    status: int
    set_cookies: list[str]


Call = Callable[[Req], Answer]


def environ(req: Req) -> dict[str, Any]:
    """A PEP 3333 environ: every byte as latin-1 text, repeated headers joined."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": req.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": ("/p/" + req.path.decode("latin-1")),
        "QUERY_STRING": req.query.decode("latin-1"),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in req.headers:
        key = "HTTP_" + name.decode().upper().replace("-", "_")
        text = value.decode("latin-1")
        env[key] = f"{env[key]}{'; ' if name == b'cookie' else ', '}{text}" if key in env else text
    return env


def wsgi_call(app: Any) -> Call:
    def call(req: Req) -> Answer:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        body = app(environ(req), start_response)
        try:
            for _ in body:
                pass
        finally:
            getattr(body, "close", lambda: None)()
        status, headers = started
        return Answer(int(status.split()[0]), [v for k, v in headers if k.lower() == "set-cookie"])

    return call


def scope(req: Req) -> dict[str, Any]:
    raw_path = b"/p/" + req.path
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": req.method,
        "scheme": "http",
        "path": raw_path.decode("utf-8", "replace"),  # what a server makes of the bytes
        "raw_path": raw_path,
        "query_string": req.query,
        "root_path": "",
        "headers": list(req.headers),
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def asgi_call(app: Any) -> Call:
    async def go(req: Req) -> Answer:
        done = asyncio.Event()
        sent: list[dict[str, Any]] = []
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope(req), receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        cookies = [v.decode("latin-1") for k, v in start.get("headers", []) if k.lower() == b"set-cookie"]
        return Answer(start["status"], cookies)

    return lambda req: asyncio.run(go(req))


def django_apps(is_async: bool) -> tuple[Call, Call]:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    from djapp import settings as project

    handler = ASGIHandler if is_async else WSGIHandler
    bare_middleware = [m for m in project.MIDDLEWARE if "segment_middleware" not in m]
    with override_settings(MIDDLEWARE=bare_middleware):
        bare = handler()
    tracked = handler()
    wrap = asgi_call if is_async else wsgi_call
    return wrap(tracked), wrap(bare)


def flask_apps() -> tuple[Call, Call]:
    from flask import Flask

    from segment_middleware.flask import Segment

    def make() -> Flask:
        app = Flask("fuzz")
        app.url_map.merge_slashes = False  # "//" is a path like another here

        @app.route("/", defaults={"rest": ""}, methods=["GET", "POST", "DELETE"])
        @app.route("/<path:rest>", methods=["GET", "POST", "DELETE"])
        def anything(rest: str) -> str:
            return "ok"

        return app

    tracked = make()
    Segment(tracked, **SETTINGS)  # type: ignore[arg-type]
    return wsgi_call(tracked), wsgi_call(make())


def _plain_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def _plain_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_apps() -> tuple[Call, Call]:
    from segment_middleware.wsgi import SegmentWSGIMiddleware

    return wsgi_call(SegmentWSGIMiddleware(_plain_wsgi, **SETTINGS)), wsgi_call(_plain_wsgi)  # type: ignore[arg-type]


def asgi_apps() -> tuple[Call, Call]:
    from segment_middleware.asgi import SegmentMiddleware

    return asgi_call(SegmentMiddleware(_plain_asgi, **SETTINGS)), asgi_call(_plain_asgi)  # type: ignore[arg-type]


ADAPTERS: dict[str, Callable[[], tuple[Call, Call]]] = {
    "django": lambda: django_apps(False),
    "django-async": lambda: django_apps(True),
    "flask": flask_apps,
    "wsgi": wsgi_apps,
    "asgi": asgi_apps,
}


class Errors(logging.Handler):
    """ERROR records of the package's logger: a message dropped for its size, a request
    that could not be tracked."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Run:
    """One adapter's apps and what its examples produced."""

    name: str
    tracked: Call
    bare: Call
    events: Any  # testing.CapturedEvents
    errors: Errors
    examples: int = 0  # requests made (Hypothesis's valid examples)


@pytest.fixture(scope="module", params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> Iterator[Run]:
    override = override_settings(
        SEGMENT={key.upper(): value for key, value in SETTINGS.items()},
        ROOT_URLCONF="djapp.fuzz_urls",
        ALLOWED_HOSTS=["*"],
        DEBUG=False,
    )
    override.enable()
    errors = Errors()
    logger = logging.getLogger("segment_middleware")
    logger.addHandler(errors)
    started = time.monotonic()
    run: Run | None = None
    try:
        with capture() as events:
            run = Run(request.param, *ADAPTERS[request.param](), events, errors)
            yield run
    finally:
        logger.removeHandler(errors)
        override.disable()
        if run is not None:  # the figures of the report (shown with -s)
            print(f"\n{run.name}: {run.examples} requests in {time.monotonic() - started:.1f} s")


def _copied_fields(message: dict[str, Any]) -> list[Any]:
    """The message's fields that carry text from the request."""
    context = message.get("context", {})
    page = context.get("page", {})
    props = message.get("properties", {})
    return [
        message.get("name"),
        context.get("userAgent"),
        context.get("ip"),
        context.get("locale"),
        *page.values(),
        *(props.get(k) for k in ("path", "url", "referrer", "search", "method")),
        *context.get("campaign", {}).values(),
    ]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(req=requests)
def test_hostile_requests_on_every_adapter(adapter: Run, req: Req) -> None:
    adapter.events.clear()
    adapter.errors.records.clear()
    adapter.examples += 1
    note(f"adapter {adapter.name}")
    answer = adapter.tracked(req)
    expected = adapter.bare(req).status
    assert answer.status == expected, f"{adapter.name}: {answer.status}, the app alone answers {expected}"
    assert not adapter.errors.records, [r.getMessage()[:300] for r in adapter.errors.records]
    pages = [m for m in adapter.events if m.get("type") == "page"]
    assert len(pages) <= 1 and (answer.status != 200 or len(pages) == 1), len(pages)
    for message in adapter.events:
        size = len(orjson.dumps(message))
        assert size <= MAX_MESSAGE_BYTES, f"a {message.get('type')} message of {size} bytes"
    for page in pages:
        for value in _copied_fields(page):
            assert not (isinstance(value, str) and CONTROL.search(value)), value[:200]
    for cookie in answer.set_cookies:
        if cookie.startswith("ajs_anonymous_id="):
            assert COOKIE_VALUE.match(cookie), cookie[:200]
