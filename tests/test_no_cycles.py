"""A tracked request leaves no reference cycle behind.

``request.segment -> tracker -> user resolver -> request`` once made every Django request's
whole object graph wait for the cyclic garbage collector: ~20 containers per request and a
collection every ~40 requests, about 10 µs per request on average. The bare frameworks
free their requests by reference counting (Flask leaves a few closures of its own), so
each adapter must too: none of our objects, and no request of the framework, may be
found only by the collector.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

import segment_middleware
from segment_middleware.context import RequestFacts
from segment_middleware.tracker import Tracker

pytest.importorskip("django")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

OURS = (Tracker, RequestFacts)


def cyclic_garbage(call: Callable[[], Any], n: int = 30) -> list[str]:
    """Type names of the objects that only the collector could free after ``n`` requests."""
    call()
    segment_middleware.flush(5)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(n):
            call()
        gc.collect()
        return [type(o).__name__ for o in gc.garbage]
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def assert_freed(garbage: list[str], *request_types: str) -> None:
    ours = [name for name in garbage if name in {t.__name__ for t in OURS}]
    requests = [name for name in garbage if name in request_types]
    assert not ours and not requests, f"left to the garbage collector: {sorted(set(garbage))}"


def environ(path: str = "/products/1/") -> dict[str, Any]:
    env: dict[str, Any] = {
        "PATH_INFO": path,
        "QUERY_STRING": "utm_source=x",
        "HTTP_USER_AGENT": "pytest",
        "HTTP_COOKIE": 'ajs_anonymous_id="5f1c7a2e-8d3b-4c6e-9a71-2b0f4e6d8c13"',
    }
    setup_testing_defaults(env)
    return env


def drain(app: Callable[..., Any], env: dict[str, Any]) -> None:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        return None

    body = app(env, start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "events.sqlite3")
    segment_middleware.flush(5)


def test_django_sync_and_user_lookup(store: str) -> None:
    from django.http import HttpResponse
    from django.test import RequestFactory, override_settings

    from segment_middleware.django import SegmentMiddleware, conf

    with override_settings(SEGMENT={"LOCAL_STORE": store}):
        conf.reset()
        try:
            middleware = SegmentMiddleware(lambda request: HttpResponse("ok"))
            factory = RequestFactory()
            garbage = cyclic_garbage(lambda: middleware(factory.get("/products/1/?utm_source=x")))
        finally:
            conf.reset()
    assert_freed(garbage, "WSGIRequest")


def test_flask(store: str) -> None:
    flask = pytest.importorskip("flask")
    from segment_middleware.flask import Segment

    app = flask.Flask(__name__)
    app.config.update(SEGMENT_LOCAL_STORE=store)
    Segment(app)
    app.add_url_rule("/products/<int:pk>/", "product", lambda pk: "ok")
    try:
        garbage = cyclic_garbage(lambda: drain(app, environ()))
    finally:
        app.extensions["segment"].runtime.delivery.shutdown(2)
    assert_freed(garbage, "Request")


def test_plain_wsgi(store: str) -> None:
    from segment_middleware.wsgi import SegmentWSGIMiddleware

    def inner(env: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = SegmentWSGIMiddleware(inner, user_id=lambda env: env.get("REMOTE_USER"), local_store=store)
    garbage = cyclic_garbage(lambda: drain(app, environ()))
    assert_freed(garbage)


def test_asgi(store: str) -> None:
    pytest.importorskip("starlette")
    from segment_middleware.asgi import SegmentMiddleware

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = SegmentMiddleware(inner, local_store=store)
    loop = asyncio.new_event_loop()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    def call() -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "scheme": "https",
            "path": "/products/1/",
            "query_string": b"utm_source=x",
            "headers": [(b"host", b"shop.example.com"), (b"user-agent", b"pytest")],
            "client": ("203.0.113.7", 5000),
            "server": ("shop.example.com", 443),
        }
        loop.run_until_complete(app(scope, receive, send))

    try:
        garbage = cyclic_garbage(call)
    finally:
        loop.close()
    assert_freed(garbage)
