"""One table of adapters for tests that must hold on every framework.

Each adapter builds the same small app (``/`` answers 200, ``/track`` tracks "Matrix Event"
through ``segment_middleware.current()``, ``/login`` logs a user in where the framework has
an auth layer (``/logout`` logs one in and out), ``/boom`` raises, ``/health`` is excluded
by default) with the settings a test gives, as lowercase names, and drives it with the
framework's own test client. Tests only see what
a user would: the response (status, ``Set-Cookie`` headers) and, through
``segment_middleware.flush()``, what the receiver got. Nothing here reaches into the
package's internals, so the tests written on it survive a redesign of the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

# Every adapter's framework, or the importing test module skips; Django set up once, here.
pytest.importorskip("django")
pytest.importorskip("flask")
pytest.importorskip("flask_login")
pytest.importorskip("httpx")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

import segment_middleware  # noqa: E402


@dataclass
class Response:
    status: int
    set_cookies: list[str]
    headers: list[tuple[str, str]] = field(default_factory=list)  # all but Set-Cookie

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def cookie(self, name: str) -> dict[str, str] | None:
        """The ``Set-Cookie`` for ``name`` as {"value": ..., attribute (lowercase): value}."""
        for header in self.set_cookies:
            first, *attrs = [part.strip() for part in header.split(";")]
            key, _, value = first.partition("=")
            if key != name:
                continue
            parsed = {"value": value}
            for attr in attrs:
                attr_name, _, attr_value = attr.partition("=")
                parsed[attr_name.lower()] = attr_value
            return parsed
        return None


@dataclass
class App:
    """An app with the middleware, ready to take requests."""

    name: str
    send: Callable[[str, str, Mapping[str, str], bool, str], Response]
    can_login: bool
    closers: list[Callable[[], None]] = field(default_factory=list)

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, *, https: bool = False, mount: str = ""
    ) -> Response:
        """``path`` as the browser sees it; under ``mount`` the app is served at that prefix
        (WSGI ``SCRIPT_NAME``, ASGI ``root_path``)."""
        assert path.startswith(mount)
        return self.send("GET", path, headers or {}, https, mount)

    def post(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.send("POST", path, headers or {}, False, "")


def _split(pairs: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """(Set-Cookie values, the other headers) of a response's header pairs."""
    pairs = [(str(k), str(v)) for k, v in pairs]
    return [v for k, v in pairs if k.lower() == "set-cookie"], [
        (k, v) for k, v in pairs if k.lower() != "set-cookie"
    ]


def settle() -> None:
    """Everything queued so far has reached the receiver (or its final fate)."""
    assert segment_middleware.flush(15), "flush() did not finish within 15 s"


# ---------------------------------------------------------------------- Django
def _django(settings: Mapping[str, Any], is_async: bool) -> App:
    import django
    from django.test import AsyncClient, Client, override_settings

    django.setup()
    override = override_settings(
        SEGMENT={key.upper(): value for key, value in settings.items()},
        ROOT_URLCONF="djapp.matrix_urls",
        ALLOWED_HOSTS=["*"],
    )
    override.enable()

    def send(method: str, path: str, headers: Mapping[str, str], https: bool, mount: str) -> Response:
        # A fresh client: no cookie jar carried over; a view's error becomes a 500 response.
        if is_async:  # ASGI: the scope's path is the whole path, root_path the mount
            client: Any = AsyncClient(raise_request_exception=False, root_path=mount)
        else:  # WSGI: SCRIPT_NAME is the mount, PATH_INFO the rest
            client, path = Client(raise_request_exception=False, SCRIPT_NAME=mount), path[len(mount) :]
        headers = dict(headers)
        # Through the client's jar: AsyncClient would join a Cookie header to the jar's own.
        for pair in headers.pop("Cookie", "").split(";"):
            if "=" in pair:
                name, _, value = pair.strip().partition("=")
                client.cookies[name] = value
        call = getattr(client, method.lower())
        kwargs = {"headers": headers, "secure": https}
        response = asyncio.run(call(path, **kwargs)) if is_async else call(path, **kwargs)
        cookies = [m.OutputString() for m in response.cookies.values()]
        return Response(response.status_code, cookies, list(response.items()))

    return App("django-async" if is_async else "django", send, can_login=True, closers=[override.disable])


# ---------------------------------------------------------------------- Flask
def _flask(settings: Mapping[str, Any]) -> App:
    import flask_login
    from flask import Flask

    from segment_middleware.flask import Segment

    app = Flask("matrix")
    app.config.update(SECRET_KEY="matrix-secret")
    app.config.update({f"SEGMENT_{key.upper()}": value for key, value in settings.items()})
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid
            self.username = uid

    manager.user_loader(User)

    @app.route("/", methods=["GET", "POST"])
    def home() -> str:
        return "ok"

    @app.route("/health")
    def health() -> str:
        return "ok"

    @app.route("/track", methods=["GET", "POST"])
    def track() -> str:
        segment_middleware.current().track("Matrix Event", {"k": 1})  # type: ignore[union-attr]
        return "tracked"

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("matrix boom")

    @app.route("/café")
    def cafe() -> str:
        return "ok"

    @app.route("/login")
    def login() -> str:
        flask_login.login_user(User("matrix-user"))
        return "in"

    @app.route("/logout")
    def logout() -> str:
        """Logs in, then out: the test client keeps no session between requests."""
        flask_login.login_user(User("matrix-user"))
        flask_login.logout_user()
        return "out"

    Segment(app)
    client = app.test_client(use_cookies=False)

    def send(method: str, path: str, headers: Mapping[str, str], https: bool, mount: str) -> Response:
        base = ("https://localhost" if https else "http://localhost") + mount  # SCRIPT_NAME
        response = client.open(path[len(mount) :], method=method, headers=dict(headers), base_url=base)
        return Response(response.status_code, *_split(response.headers.items()))

    return App("flask", send, can_login=True)


# ---------------------------------------------------------------------- ASGI
async def _asgi_inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    route = scope["path"].removeprefix(scope.get("root_path") or "")  # as Starlette's router does
    if route == "/track":
        segment_middleware.current().track("Matrix Event", {"k": 1})  # type: ignore[union-attr]
    if route == "/boom":
        raise RuntimeError("matrix boom")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _asgi(settings: Mapping[str, Any]) -> App:
    import httpx

    from segment_middleware.asgi import SegmentMiddleware

    app = SegmentMiddleware(_asgi_inner, **settings)

    async def go(method: str, path: str, headers: Mapping[str, str], https: bool, mount: str) -> Response:
        transport = httpx.ASGITransport(  # a server answers 500 when the app raises
            app=app,  # type: ignore[arg-type]
            client=("127.0.0.1", 50000),
            raise_app_exceptions=False,
            root_path=mount,
        )
        base = "https://testserver" if https else "http://testserver"
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            response = await client.request(method, path, headers=dict(headers))
        return Response(response.status_code, *_split(response.headers.multi_items()))

    return App("asgi", lambda *request: asyncio.run(go(*request)), can_login=False)


# ---------------------------------------------------------------------- plain WSGI
def _wsgi_inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ.get("PATH_INFO") == "/track":
        segment_middleware.current().track("Matrix Event", {"k": 1})  # type: ignore[union-attr]
    if environ.get("PATH_INFO") == "/boom":
        raise RuntimeError("matrix boom")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _wsgi(settings: Mapping[str, Any]) -> App:
    from werkzeug.test import Client

    from segment_middleware.wsgi import SegmentWSGIMiddleware

    client = Client(SegmentWSGIMiddleware(_wsgi_inner, **settings), use_cookies=False)

    def send(method: str, path: str, headers: Mapping[str, str], https: bool, mount: str) -> Response:
        environ = {"REMOTE_ADDR": "127.0.0.1"}  # what a server sets; werkzeug's bare client does not
        base = ("https://localhost" if https else "http://localhost") + mount  # SCRIPT_NAME
        try:
            response = client.open(
                path[len(mount) :], method=method, headers=dict(headers), environ_base=environ, base_url=base
            )
        except RuntimeError:  # the app raised: a WSGI server answers 500
            return Response(500, [])
        return Response(response.status_code, *_split(response.headers.items()))

    return App("wsgi", send, can_login=False)


ADAPTERS: dict[str, Callable[[Mapping[str, Any]], App]] = {
    "django": lambda s: _django(s, is_async=False),
    "django-async": lambda s: _django(s, is_async=True),
    "flask": _flask,
    "asgi": _asgi,
    "wsgi": _wsgi,
}


@contextlib.contextmanager
def running(name: str, settings: Mapping[str, Any]) -> Iterator[App]:
    """The adapter's app with ``settings``; on exit everything it queued is settled."""
    app = ADAPTERS[name](settings)
    try:
        yield app
    finally:
        with contextlib.suppress(AssertionError):
            settle()
        for close in app.closers:
            close()
