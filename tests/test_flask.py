"""The Flask extension in process: settings, the tracker, users, errors, streaming, snippet.

Messages really travel to the receiver on 127.0.0.1; each app gets its own runtime, shut
down at the end of its test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

flask = pytest.importorskip("flask")
flask_login = pytest.importorskip("flask_login")

from flask import Flask, g, request, stream_with_context  # noqa: E402
from helpers import WRITE_KEY  # noqa: E402
from segment_receiver import SegmentReceiver  # noqa: E402

import segment_middleware  # noqa: E402
from segment_middleware import SettingsError  # noqa: E402
from segment_middleware.flask import Segment  # noqa: E402


def make_app(receiver: SegmentReceiver, tmp_path: Path, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        SEGMENT_WRITE_KEY=WRITE_KEY,
        SEGMENT_HOST=receiver.url,
        SEGMENT_FLUSH_INTERVAL=60,
        SEGMENT_LOCAL_STORE=str(tmp_path / "store.sqlite3"),
    )
    app.config.update(config)
    return app


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        state = app.extensions.get("segment")
        if state is not None:
            state.runtime.delivery.shutdown(2)


def delivered(app: Flask, receiver: SegmentReceiver) -> list[dict[str, Any]]:
    assert app.extensions["segment"].runtime.delivery.flush(5)
    return receiver.messages


def pages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "page"]


def test_init_app_factory_config_and_extension(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    segment = Segment()
    app = make_app(receiver, tmp_path, SEGMENT_EXCLUDE_PATHS=["/skip"])
    apps.append(app)
    segment.init_app(app)
    assert app.extensions["segment"].extension is segment
    seen: dict[str, Any] = {}

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        seen["same"] = request.segment is g.segment is segment_middleware.current()  # type: ignore[attr-defined]
        request.segment.title = "Hello"  # type: ignore[attr-defined]
        request.segment.track("Greeted", {"name": name})  # type: ignore[attr-defined]
        return "hi"

    @app.get("/skip/me")
    def skipped() -> str:
        request.segment.track("Never Sent")  # type: ignore[attr-defined]
        return "no"

    client = app.test_client()
    response = client.get(
        "/hello/bob?utm_source=news", headers={"User-Agent": "UA", "Accept-Language": "de-DE"}
    )
    assert response.status_code == 200 and seen["same"] is True
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("ajs_anonymous_id=%22") and "Path=/" in cookie and "SameSite=Lax" in cookie
    assert "HttpOnly" not in cookie
    skipped_response = client.get("/skip/me")
    assert "Set-Cookie" not in skipped_response.headers
    messages = delivered(app, receiver)
    (page,) = pages(messages)
    (track,) = [m for m in messages if m["type"] == "track"]
    anon = cookie.split(";")[0].split("=", 1)[1][3:-3]
    assert page["anonymousId"] == track["anonymousId"] == anon
    assert page["name"] == "hello"
    assert page["properties"]["title"] == "Hello" and page["properties"]["status"] == 200
    assert page["context"]["campaign"] == {"source": "news"}
    assert page["context"]["userAgent"] == "UA" and page["context"]["locale"] == "de-DE"
    assert track["event"] == "Greeted" and track["properties"] == {"name": "bob"}
    assert segment_middleware.current() is None


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"SEGMENT_FLUSH_AT": 0}, "SEGMENT_FLUSH_AT"),
        ({"SEGMENT_NOT_A_SETTING": 1}, "SEGMENT_NOT_A_SETTING"),
        ({"SEGMENT_HOST": "ftp://x"}, "SEGMENT_HOST"),
        ({"SEGMENT_CDN_URL": "not a url"}, "SEGMENT_CDN_URL"),
    ],
)
def test_bad_config_fails_at_init_app_naming_the_key(
    receiver: SegmentReceiver, tmp_path: Path, config: dict[str, Any], named: str
) -> None:
    app = make_app(receiver, tmp_path, **config)
    with pytest.raises(SettingsError) as info:
        Segment(app)
    assert named in str(info.value) and WRITE_KEY not in str(info.value)


def test_view_that_raises_gets_500_page_and_the_error_propagates(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    app = make_app(receiver, tmp_path)
    apps.append(app)
    Segment(app)

    @app.get("/boom")
    def boom() -> str:
        raise KeyError("from the view")

    app.testing = True  # PROPAGATE_EXCEPTIONS: the test client re-raises the view's error
    with pytest.raises(KeyError, match="from the view"):
        app.test_client().get("/boom")
    app.testing = False
    assert app.test_client().get("/boom").status_code == 500
    statuses = [m["properties"]["status"] for m in pages(delivered(app, receiver))]
    assert statuses == [500, 500], "one page call per request, with 500"


def test_our_failure_never_masks_the_apps_exception(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(receiver, tmp_path)
    apps.append(app)
    Segment(app)
    runtime = app.extensions["segment"].runtime

    def broken_end(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("segment internals broke")

    runtime.end = broken_end  # type: ignore[method-assign]

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("the app's own error")

    @app.get("/ok")
    def ok() -> str:
        return "fine"

    app.testing = True
    with pytest.raises(ValueError, match="the app's own error"):
        app.test_client().get("/boom")
    assert app.test_client().get("/ok").data == b"fine"
    assert "could not finish tracking" in caplog.text


def test_stream_with_context_is_not_buffered_and_paged_once(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    app = make_app(receiver, tmp_path)
    apps.append(app)
    Segment(app)
    produced: list[int] = []

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[str]:
            for i in range(3):
                produced.append(i)
                request.segment.track("Chunk Sent", {"i": i})  # type: ignore[attr-defined]
                yield f"chunk {i}\n"

        return flask.Response(stream_with_context(chunks()), mimetype="text/plain")

    response = app.test_client().get("/stream", buffered=False)
    assert response.status_code == 200 and response.headers["Set-Cookie"].startswith("ajs_anonymous_id=")
    body = iter(response.response)
    assert next(body) == b"chunk 0\n"
    assert produced == [0], "the first chunk reached the client before the rest was produced"
    assert b"".join(body) == b"chunk 1\nchunk 2\n"
    response.close()
    messages = delivered(app, receiver)
    (page,) = pages(messages)
    assert page["properties"]["status"] == 200
    tracks = [m for m in messages if m["type"] == "track"]
    assert sorted(m["properties"]["i"] for m in tracks) == [0, 1, 2]
    assert {m["anonymousId"] for m in tracks} == {page["anonymousId"]}


def test_flask_login_user_and_login_identify(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    app = make_app(
        receiver,
        tmp_path,
        SEGMENT_IDENTIFY_TRAITS=lambda user: {"plan": "pro"},
        SEGMENT_TRACK_UNMATCHED_ROUTES=True,  # the route-less 404 below is a page call
    )
    apps.append(app)
    login = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid

    login.user_loader(lambda uid: User(uid))
    Segment(app)

    @app.post("/login")
    def do_login() -> str:
        flask_login.login_user(User("u-7"))
        return "in"

    @app.get("/me")
    def me() -> str:
        return "me"

    client = app.test_client()
    client.set_cookie("ajs_anonymous_id", "%22anon-login%22")
    assert client.post("/login").status_code == 200
    assert client.get("/me").status_code == 200
    client.get("/logout-unknown")  # no route: 404, a page call here; user still signed in
    messages = delivered(app, receiver)
    (identify,) = [m for m in messages if m["type"] == "identify"]
    assert identify["userId"] == "u-7" and identify["anonymousId"] == "anon-login"
    assert identify["traits"] == {"plan": "pro"}
    assert [(m["userId"], m["properties"]["status"]) for m in pages(messages)] == [
        ("u-7", 200),
        ("u-7", 200),
        ("u-7", 404),
    ]
    assert {m["anonymousId"] for m in pages(messages)} == {"anon-login"}


def test_one_extension_serves_two_apps_each_with_its_own_settings(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    """``segment = Segment()`` with ``init_app`` on two apps: each keeps its own runtime, so
    app A's log-in identify carries app A's IDENTIFY_TRAITS, not those of the last app."""
    segment = Segment()
    made = []
    for name in ("a", "b"):
        app = make_app(receiver, tmp_path / name, SEGMENT_IDENTIFY_TRAITS=lambda user, n=name: {"app": n})
        apps.append(app)
        manager = flask_login.LoginManager(app)

        class User(flask_login.UserMixin):
            def __init__(self, uid: str) -> None:
                self.id = uid

        manager.user_loader(User)
        app.add_url_rule(
            "/login", f"login_{name}", lambda n=name, U=User: flask_login.login_user(U(f"user-{n}")) and "in"
        )
        segment.init_app(app)
        made.append(app)
    assert made[0].extensions["segment"].runtime is not made[1].extensions["segment"].runtime
    for app in made:
        assert app.test_client().get("/login").status_code == 200
    for app in made:
        app.extensions["segment"].runtime.delivery.flush(5)
    identifies = {m["userId"]: m["traits"] for m in receiver.messages if m["type"] == "identify"}
    assert identifies == {"user-a": {"app": "a"}, "user-b": {"app": "b"}}


def test_g_user_without_flask_login_and_header_id(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    app = make_app(receiver, tmp_path)
    apps.append(app)
    Segment(app)

    @app.before_request
    def auth() -> None:
        token = request.headers.get("Authorization")
        if token == "dict":
            g.user = {"id": 5}
        elif token == "object":
            g.user = type("U", (), {"id": "obj-9"})()

    @app.get("/")
    def home() -> str:
        return "home"

    client = app.test_client()
    r1 = client.get("/", headers={"Authorization": "dict", "X-Anonymous-Id": "hdr-1"})
    assert "Set-Cookie" not in r1.headers, "an id from the header needs no cookie"
    client.get("/", headers={"Authorization": "object", "X-Anonymous-Id": "hdr-2"})
    client.get("/", headers={"X-Anonymous-Id": "x" * 101})  # too long: ignored, fresh id
    got = [(m.get("userId"), m["anonymousId"]) for m in pages(delivered(app, receiver))]
    assert got[:2] == [("5", "hdr-1"), ("obj-9", "hdr-2")]
    assert got[2][0] is None and got[2][1] != "x" * 101 and len(got[2][1]) == 36


def test_user_is_looked_up_once_per_request_and_identify_wins(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    calls: list[str] = []

    def user_id(req: Any) -> str | None:
        calls.append(req.path)
        return req.headers.get("X-User")

    app = make_app(receiver, tmp_path, SEGMENT_USER_ID=user_id)
    apps.append(app)
    Segment(app)

    @app.get("/plain")
    def plain() -> str:
        return "plain"

    @app.get("/signed-in")
    def signed_in() -> str:
        request.segment.identify("new-7", {"plan": "pro"})  # type: ignore[attr-defined]
        return "welcome"

    client = app.test_client()
    client.get("/plain")
    assert calls == ["/plain"], "an anonymous request is looked up once, at the page call"
    client.get("/plain", headers={"X-User": "u-1"})
    client.get("/signed-in")
    got = [(m["name"], m.get("userId")) for m in pages(delivered(app, receiver))]
    assert got == [("plain", None), ("plain", "u-1"), ("signed_in", "new-7")]
    assert calls.count("/plain") == 2 and calls.count("/signed-in") == 1


def test_jinja_global_renders_the_snippet(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    app = make_app(receiver, tmp_path, SEGMENT_CDN_URL="http://127.0.0.1:9/cdn/")
    apps.append(app)
    Segment(app)
    with app.test_request_context("/"):
        html = flask.render_template_string("<head>{{ segment_snippet(nonce='n<1>') }}</head>")
    assert '<script nonce="n&lt;1&gt;">' in html
    assert (
        f'analytics.load("{WRITE_KEY}",{{"storage":{{"stores":["cookie","localStorage","memory"]}}}})' in html
    )
    assert 'analytics._cdn="http://127.0.0.1:9/cdn"' in html
    assert "analytics.page()" not in html, "the server already sends the page call"

    bare = Flask("no_key")
    bare.config["SEGMENT_LOCAL_STORE"] = str(tmp_path / "other.sqlite3")
    apps.append(bare)
    Segment(bare)
    with bare.test_request_context("/"):
        assert "<script" not in flask.render_template_string("{{ segment_snippet() }}")


def test_current_is_the_request_tracker_and_none_after_each_kind_of_response(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    """current() is the request's tracker in the view, and None again once the response
    is done, a streamed body closed, or the view's error re-raised (the test client runs
    the app in this thread, so a tracker left behind would show here)."""
    app = make_app(receiver, tmp_path)
    apps.append(app)
    Segment(app)
    seen: dict[str, Any] = {}

    @app.get("/plain")
    def plain() -> str:
        seen["plain"] = segment_middleware.current() is request.segment  # type: ignore[attr-defined]
        return "ok"

    @app.get("/stream")
    def stream() -> Any:
        seen["stream"] = segment_middleware.current() is request.segment  # type: ignore[attr-defined]

        def chunks() -> Iterator[str]:
            yield "a"

        return flask.Response(stream_with_context(chunks()))

    @app.get("/boom")
    def boom() -> str:
        seen["boom"] = segment_middleware.current() is request.segment  # type: ignore[attr-defined]
        raise LookupError("the view's error")

    client = app.test_client()
    assert segment_middleware.current() is None
    assert client.get("/plain").data == b"ok"
    assert segment_middleware.current() is None
    response = client.get("/stream", buffered=False)
    assert b"".join(response.response) == b"a"
    response.close()
    assert segment_middleware.current() is None
    app.testing = True
    with pytest.raises(LookupError):
        client.get("/boom")
    assert segment_middleware.current() is None
    assert seen == {"plain": True, "stream": True, "boom": True}
    statuses = sorted(m["properties"]["status"] for m in pages(delivered(app, receiver)))
    assert statuses == [200, 200, 500]


def test_page_call_when_an_inner_wsgi_middleware_starts_the_response_late(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask]
) -> None:
    """A WSGI middleware between us and Flask that starts the response only after Flask
    popped its request context (here: it buffers the body first) still gets exactly one
    page call, with the status and the new visitor's cookie."""
    app = make_app(receiver, tmp_path)
    apps.append(app)
    inner = app.wsgi_app

    def start_late(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        started: list[tuple[str, list[tuple[str, str]]]] = []
        body = b"".join(
            inner(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
        )
        start_response(*started[0])
        return [body]

    app.wsgi_app = start_late  # type: ignore[method-assign]
    Segment(app)

    @app.get("/late")
    def late() -> str:
        return "late"

    response = app.test_client().get("/late")
    assert response.data == b"late"
    assert response.headers["Set-Cookie"].startswith("ajs_anonymous_id=")
    (page,) = pages(delivered(app, receiver))
    assert page["properties"]["status"] == 200 and page["properties"]["path"] == "/late"
    assert page["anonymousId"] in response.headers["Set-Cookie"]


@pytest.mark.parametrize("base_url", ["http://shop.test", "https://shop.test"])
def test_new_visitor_cookie_attributes(
    receiver: SegmentReceiver, tmp_path: Path, apps: list[Flask], base_url: str
) -> None:
    """SPEC 3: Path=/, SameSite=Lax, one year, not HttpOnly, Secure on https, quoted form."""
    app = make_app(receiver, tmp_path)
    apps.append(app)
    Segment(app)

    @app.get("/")
    def home() -> str:
        return "home"

    cookie = app.test_client().get("/", base_url=base_url).headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert cookie.startswith("ajs_anonymous_id=%22") and cookie.split(";")[0].endswith("%22")
    assert f"Max-Age={365 * 24 * 3600}" in cookie and "Path=/" in cookie and "SameSite=Lax" in cookie
    assert "httponly" not in attributes
    assert ("secure" in attributes) == base_url.startswith("https")
    delivered(app, receiver)
