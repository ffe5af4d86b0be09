"""Apps that mount the collection routes, for tests/test_collect_servers.py.

Every app signs a user in from the ``X-Test-User`` header (``42``, or ``staff:7`` for a
staff user), as a session would: the collection routes must take the userId from there and
never from a body. ``GET /stats`` answers this process's ``segment_middleware.stats()``.
Settings from the environment: ``TEST_RATE_LIMIT`` (COLLECT_RATE_LIMIT), ``TEST_ORIGINS``
(ALLOWED_ORIGINS, comma-separated), ``TEST_BROWSER_KEY`` (BROWSER_WRITE_KEY),
``TEST_SERVE_JS=1`` (SERVE_ANALYTICS_JS, from ``SEGMENT_CDN_URL``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import segment_middleware


def collect_settings() -> dict[str, Any]:
    settings: dict[str, Any] = {
        "flush_interval": float(os.environ.get("TEST_FLUSH_INTERVAL", "60")),
        "shutdown_timeout": 5,
        "collect_rate_limit": os.environ.get("TEST_RATE_LIMIT") or None,
        "allowed_origins": [o for o in os.environ.get("TEST_ORIGINS", "").split(",") if o],
        "serve_analytics_js": os.environ.get("TEST_SERVE_JS") == "1",  # tests/test_first_party.py
    }
    if os.environ.get("TEST_BROWSER_KEY"):
        settings["browser_write_key"] = os.environ["TEST_BROWSER_KEY"]
    return settings


def test_user(header: str | None) -> dict[str, Any] | None:
    """``42`` -> user 42; ``staff:7`` -> staff user 7; nothing -> anonymous."""
    if not header:
        return None
    staff = header.startswith("staff:")
    return {"id": header.removeprefix("staff:"), "is_staff": staff}


def stats_body() -> bytes:
    return json.dumps(segment_middleware.stats()).encode()


# ---------------------------------------------------------------------- Flask
def make_flask() -> Any:
    from flask import Flask, g, request

    from segment_middleware.flask import Segment, collect_blueprint

    app = Flask("collect_flask")
    app.config.update({f"SEGMENT_{k.upper()}": v for k, v in collect_settings().items()})
    Segment(app)

    @app.before_request
    def sign_in() -> None:
        user = test_user(request.headers.get("X-Test-User"))
        if user is not None:
            g.user = user

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/stats")
    def stats() -> Any:
        return app.response_class(stats_body(), mimetype="application/json")

    app.register_blueprint(collect_blueprint, url_prefix="/segment")
    return app


# ---------------------------------------------------------------------- FastAPI
def make_fastapi() -> Any:
    from fastapi import FastAPI
    from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.requests import HTTPConnection
    from starlette.responses import PlainTextResponse, Response

    from segment_middleware.asgi import SegmentMiddleware, collect_router

    class HeaderBackend(AuthenticationBackend):
        async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
            user = test_user(conn.headers.get("x-test-user"))
            if user is None:
                return None
            return AuthCredentials(["authenticated", *(["staff"] if user["is_staff"] else [])]), SimpleUser(
                user["id"]
            )

    app = FastAPI()
    app.add_middleware(AuthenticationMiddleware, backend=HeaderBackend())
    app.add_middleware(SegmentMiddleware, **collect_settings())  # outermost: sees every request

    @app.get("/health")
    def health() -> Response:
        return PlainTextResponse("ok")

    @app.get("/stats")
    def stats() -> Response:
        return Response(stats_body(), media_type="application/json")

    app.include_router(collect_router, prefix="/segment")
    return app


# ---------------------------------------------------------------------- plain WSGI
def make_wsgi() -> Any:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from segment_middleware.wsgi import SegmentWSGIMiddleware
    from segment_middleware.wsgi_collect import CollectApp

    def site(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/stats":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [stats_body()]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def user_id(environ: dict[str, Any]) -> str | None:
        user = test_user(environ.get("HTTP_X_TEST_USER"))
        return None if user is None else user["id"]

    def is_staff(environ: dict[str, Any]) -> bool:
        user = test_user(environ.get("HTTP_X_TEST_USER"))
        return bool(user and user["is_staff"])

    collect = CollectApp(is_staff=is_staff)
    return SegmentWSGIMiddleware(
        DispatcherMiddleware(site, {"/segment": collect}), user_id, **collect_settings()
    )


flask_app = make_flask() if os.environ.get("TEST_COLLECT_APP") == "flask" else None
fastapi_app = make_fastapi() if os.environ.get("TEST_COLLECT_APP") == "fastapi" else None
wsgi_app = make_wsgi() if os.environ.get("TEST_COLLECT_APP") == "wsgi" else None
