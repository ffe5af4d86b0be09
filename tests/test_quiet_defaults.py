"""Quiet defaults (issue 24, item 5): what is never a page, on each adapter, and the
"did you mean" of an unknown setting.

Not tracked by default: Django's STATIC_URL / MEDIA_URL paths and django-debug-toolbar's
URLs, Flask's static endpoints, and a 404 for which the router matched no route
(TRACK_UNMATCHED_ROUTES turns the last one back on). Each test drives the framework's own
test client and reads what a user's test would: the response's Set-Cookie and, through
``segment_middleware.testing.capture()``, the messages sent (captured at the call, so
"nothing sent" is known when the response is back). Every "nothing" has a tracked request
beside it in the same app, so a test fails when the exclusion is too wide or missing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

from django.test import AsyncClient, Client, override_settings  # noqa: E402

import segment_middleware  # noqa: E402
from segment_middleware import Settings, SettingsError  # noqa: E402
from segment_middleware.django import conf  # noqa: E402
from segment_middleware.testing import capture  # noqa: E402

COOKIE = "ajs_anonymous_id"
TYPO = r"^exclude_path: unknown setting \(did you mean exclude_paths\?\)$"


def page_paths(events: Any) -> list[tuple[str, int]]:
    return [(m["properties"]["path"], m["properties"]["status"]) for m in events if m["type"] == "page"]


# ---------------------------------------------------------------------- Django
DJANGO_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "debug_toolbar",
    "segment_middleware.django",
]


@pytest.fixture
def django_app(tmp_path: Path) -> Iterator[Any]:
    """Django with django-debug-toolbar installed; ``configure(**overrides)`` applies
    Django settings (SEGMENT included) for the rest of the test."""
    pytest.importorskip("debug_toolbar")
    applied: list[Any] = []

    def configure(segment: dict[str, Any] | None = None, **overrides: Any) -> None:
        settings = {
            "ROOT_URLCONF": "djapp.quiet_urls",
            "STATIC_URL": "/static/",
            "MEDIA_URL": "/media/",
            **overrides,
            "SEGMENT": {"LOCAL_STORE": str(tmp_path / "store.sqlite3"), **(segment or {})},
        }
        # The apps last: the toolbar's ready() reads STATIC_URL, and override_settings
        # installs apps before it sets the other settings.
        for override in override_settings(**settings), override_settings(INSTALLED_APPS=DJANGO_APPS):
            override.enable()
            applied.append(override)

    yield configure
    segment_middleware.flush(5)
    for override in reversed(applied):
        override.disable()
    conf.reset()


def django_get(path: str, is_async: bool) -> Any:
    if is_async:
        return asyncio.run(AsyncClient(raise_request_exception=False).get(path))
    return Client(raise_request_exception=False).get(path)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_django_static_media_and_debug_toolbar_urls_are_not_tracked(django_app: Any, is_async: bool) -> None:
    django_app()
    with capture() as events:
        quiet = [django_get(p, is_async) for p in ("/static/app.css", "/media/photo.png")]
        toolbar = django_get("/__debug__/render_panel/?store_id=s&panel_id=p", is_async)
        tracked = django_get("/", is_async)
    assert [r.status_code for r in quiet] == [200, 200]
    assert toolbar.status_code == 404  # the toolbar's own view (DEBUG is off) ran
    assert all(COOKIE not in r.cookies for r in [*quiet, toolbar])
    assert page_paths(events) == [("/", 200)]
    assert COOKIE in tracked.cookies


def test_django_static_url_on_another_host_excludes_nothing_here(django_app: Any) -> None:
    django_app(STATIC_URL="https://cdn.example.com/static/", MEDIA_URL="//media.example.com/")
    with capture() as events:
        django_get("/static/app.css", False)
        django_get("/media/photo.png", False)
    assert page_paths(events) == [("/static/app.css", 200), ("/media/photo.png", 200)]


def test_django_relative_static_url_is_excluded_as_django_prefixes_it(django_app: Any) -> None:
    django_app(STATIC_URL="static/", MEDIA_URL="")  # Django: "/static/"; "" is "/" (not taken)
    with capture() as events:
        django_get("/static/app.css", False)
        django_get("/media/photo.png", False)
    assert page_paths(events) == [("/media/photo.png", 200)]


def test_django_debug_toolbar_under_an_unreadable_prefix_is_known_by_its_namespace(
    django_app: Any,
) -> None:
    django_app(ROOT_URLCONF="djapp.quiet_regex_urls")
    with capture() as events:
        toolbar = django_get("/__debug__/render_panel/?store_id=s&panel_id=p", False)
        django_get("/", False)
    assert toolbar.status_code == 404 and COOKIE not in toolbar.cookies
    assert page_paths(events) == [("/", 200)]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_django_reports_a_request_no_route_matched(django_app: Any, is_async: bool) -> None:
    django_app()
    with capture() as events:
        unmatched = django_get("/no/such/page/", is_async)
        own_404 = django_get("/gone/", is_async)  # a view's Http404: the route matched
    assert unmatched.status_code == 404 and COOKIE not in unmatched.cookies
    assert page_paths(events) == [("/gone/", 404)]
    assert COOKIE in own_404.cookies


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_django_tracks_unmatched_routes_when_asked(django_app: Any, is_async: bool) -> None:
    django_app({"TRACK_UNMATCHED_ROUTES": True})
    with capture() as events:
        response = django_get("/no/such/page/", is_async)
    assert response.status_code == 404 and COOKIE in response.cookies
    (page,) = events.of_type("page")
    assert page["name"] == "/no/such/page/" and page["properties"]["status"] == 404


def test_django_check_suggests_the_nearest_setting(django_app: Any) -> None:
    from segment_middleware.django.checks import check_settings

    django_app({"EXCLUDE_PATH": ["/admin"], "BANANA": 1})
    errors = {e.msg: e.id for e in check_settings()}
    assert errors == {
        "SEGMENT['EXCLUDE_PATH']: unknown setting (did you mean EXCLUDE_PATHS?)": "segment.E000",
        "SEGMENT['BANANA']: unknown setting": "segment.E000",
    }


# ---------------------------------------------------------------------- Flask
@pytest.fixture
def flask_apps() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for app in made:
        app.extensions["segment"].runtime.delivery.shutdown(2)


def make_flask(tmp_path: Path, made: list[Any], **config: Any) -> Any:
    from flask import Blueprint, Flask, abort

    from segment_middleware.flask import Segment

    (tmp_path / "static").mkdir(exist_ok=True)
    (tmp_path / "static" / "app.css").write_text("body {}")
    (tmp_path / "bp_static").mkdir(exist_ok=True)
    (tmp_path / "bp_static" / "bp.js").write_text("1")
    app = Flask("quiet", static_folder=str(tmp_path / "static"))
    app.config.update(SEGMENT_LOCAL_STORE=str(tmp_path / "store.sqlite3"), **config)

    @app.route("/")
    def home() -> str:
        return "ok"

    @app.route("/gone")
    def gone() -> str:
        abort(404)

    files = str(tmp_path / "bp_static")
    bp = Blueprint("shop", "quiet_shop", static_folder=files, static_url_path="/static", url_prefix="/shop")
    app.register_blueprint(bp)
    Segment(app)
    made.append(app)
    return app.test_client(use_cookies=False)


def set_cookie(response: Any) -> bool:
    return any(v.startswith(COOKIE + "=") for v in response.headers.getlist("Set-Cookie"))


def test_flask_static_files_are_not_tracked(tmp_path: Path, flask_apps: list[Any]) -> None:
    client = make_flask(tmp_path, flask_apps)
    with capture() as events:
        quiet = [client.get("/static/app.css"), client.get("/shop/static/bp.js")]
        tracked = client.get("/")
    assert [r.status_code for r in quiet] == [200, 200]
    assert not any(set_cookie(r) for r in quiet) and set_cookie(tracked)
    assert page_paths(events) == [("/", 200)]
    for r in [*quiet, tracked]:
        r.close()


def test_flask_reports_a_request_no_route_matched(tmp_path: Path, flask_apps: list[Any]) -> None:
    client = make_flask(tmp_path, flask_apps)
    with capture() as events:
        unmatched = client.get("/no/such/page")
        own_404 = client.get("/gone")  # abort(404) in a view: the route matched
    assert unmatched.status_code == 404 and not set_cookie(unmatched)
    assert own_404.status_code == 404 and set_cookie(own_404)
    assert page_paths(events) == [("/gone", 404)]


def test_flask_tracks_unmatched_routes_when_asked(tmp_path: Path, flask_apps: list[Any]) -> None:
    client = make_flask(tmp_path, flask_apps, SEGMENT_TRACK_UNMATCHED_ROUTES=True)
    with capture() as events:
        response = client.get("/no/such/page")
    assert response.status_code == 404 and set_cookie(response)
    assert page_paths(events) == [("/no/such/page", 404)]


def test_flask_suggests_the_nearest_setting(tmp_path: Path) -> None:
    from flask import Flask

    from segment_middleware.flask import Segment

    app = Flask("quiet-typo")
    app.config.update(SEGMENT_EXCLUDE_PATH=["/admin"])
    want = r"^SEGMENT_EXCLUDE_PATH: unknown setting \(did you mean SEGMENT_EXCLUDE_PATHS\?\)$"
    with pytest.raises(SettingsError, match=want):
        Segment(app)


# ---------------------------------------------------------------------- Starlette / FastAPI
def starlette_app(kind: str) -> Any:
    from starlette.exceptions import HTTPException
    from starlette.responses import PlainTextResponse

    if kind == "fastapi":
        fastapi = pytest.importorskip("fastapi")
        app = fastapi.FastAPI()

        @app.get("/")
        def home() -> PlainTextResponse:
            return PlainTextResponse("ok")

        @app.get("/gone")
        def gone() -> None:
            raise HTTPException(404)

        return app
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def gone(request: Any) -> PlainTextResponse:
        raise HTTPException(404)

    return Starlette(routes=[Route("/", home), Route("/gone", gone)])


@pytest.fixture
def asgi_apps() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for middleware in made:
        middleware.runtime.delivery.shutdown(2)


def asgi_get(app: Any, *paths: str) -> list[Any]:
    import httpx

    async def go() -> list[Any]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(go())


def asgi_cookie(response: Any) -> bool:
    return any(v.startswith(COOKIE + "=") for v in response.headers.get_list("set-cookie"))


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
def test_asgi_reports_a_request_no_route_matched(kind: str, tmp_path: Path, asgi_apps: list[Any]) -> None:
    from segment_middleware.asgi import SegmentMiddleware

    app = SegmentMiddleware(starlette_app(kind), local_store=str(tmp_path / "store.sqlite3"))
    asgi_apps.append(app)
    with capture() as events:
        unmatched, own_404, _home = asgi_get(app, "/no/such/page", "/gone", "/")
    assert unmatched.status_code == 404 and not asgi_cookie(unmatched)
    assert own_404.status_code == 404 and asgi_cookie(own_404)  # the view's HTTPException
    assert page_paths(events) == [("/gone", 404), ("/", 200)]


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
def test_asgi_tracks_unmatched_routes_when_asked(kind: str, tmp_path: Path, asgi_apps: list[Any]) -> None:
    from segment_middleware.asgi import SegmentMiddleware

    app = SegmentMiddleware(
        starlette_app(kind), local_store=str(tmp_path / "store.sqlite3"), track_unmatched_routes=True
    )
    asgi_apps.append(app)
    with capture() as events:
        (response,) = asgi_get(app, "/no/such/page")
    assert response.status_code == 404 and asgi_cookie(response)
    assert page_paths(events) == [("/no/such/page", 404)]


def test_a_plain_asgi_apps_404_is_tracked_as_no_router_said_otherwise(
    tmp_path: Path, asgi_apps: list[Any]
) -> None:
    from segment_middleware.asgi import SegmentMiddleware

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not here"})

    app = SegmentMiddleware(plain, local_store=str(tmp_path / "store.sqlite3"))
    asgi_apps.append(app)
    with capture() as events:
        (response,) = asgi_get(app, "/anything")
    assert response.status_code == 404 and asgi_cookie(response)
    assert page_paths(events) == [("/anything", 404)]


def test_asgi_keywords_suggest_the_nearest_setting() -> None:
    from segment_middleware.asgi import SegmentMiddleware

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not reached")

    with pytest.raises(SettingsError, match=TYPO):
        SegmentMiddleware(inner, exclude_path=["/admin"])


# ---------------------------------------------------------------------- plain WSGI
def test_a_plain_wsgi_apps_404_is_tracked_as_no_router_said_otherwise(tmp_path: Path) -> None:
    from werkzeug.test import Client as WSGIClient

    from segment_middleware.wsgi import SegmentWSGIMiddleware

    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here"]

    app = SegmentWSGIMiddleware(plain, local_store=str(tmp_path / "store.sqlite3"))
    try:
        with capture() as events:
            response = WSGIClient(app).get("/anything")
        assert response.status_code == 404
        assert page_paths(events) == [("/anything", 404)]
    finally:
        app.runtime.delivery.shutdown(2)


# ---------------------------------------------------------------------- Settings, configure()
def test_settings_keywords_suggest_the_nearest_setting() -> None:
    with pytest.raises(SettingsError, match=TYPO):
        Settings(exclude_path=["/admin"])
    with pytest.raises(TypeError, match=r"did you mean flush_at\?"):  # still the TypeError it was
        Settings().replace(flush_att=5)
    with pytest.raises(SettingsError, match=r"^zzz: unknown setting$"):  # nothing near: no guess
        Settings(zzz=1)


def test_configure_suggests_the_nearest_setting() -> None:
    with pytest.raises(SettingsError, match=r"^track_unmatched_route: unknown setting \(did you mean "):
        segment_middleware.configure(track_unmatched_route=True)


def test_track_unmatched_routes_is_off_by_default_and_validated() -> None:
    assert Settings().track_unmatched_routes is False
    assert Settings(track_unmatched_routes="yes").track_unmatched_routes is True
    with pytest.raises(SettingsError, match=r"^track_unmatched_routes: must be True or False"):
        Settings(track_unmatched_routes=3)
