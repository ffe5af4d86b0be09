"""Django adapter, in process: what each request produces, as it arrives over HTTP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("django")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from helpers import WRITE_KEY  # noqa: E402
from segment_receiver import SegmentReceiver  # noqa: E402

import segment_middleware  # noqa: E402
from segment_middleware.django import conf  # noqa: E402

call_command("migrate", run_syncdb=True, verbosity=0)


@pytest.fixture
def segment(receiver: SegmentReceiver, store_path: str) -> Iterator[SegmentReceiver]:
    config = {"WRITE_KEY": WRITE_KEY, "HOST": receiver.url, "FLUSH_INTERVAL": 0.05, "LOCAL_STORE": store_path}
    with override_settings(SEGMENT=config):
        conf.reset()
        yield receiver
    segment_middleware.flush(5)
    conf.reset()


def flushed(receiver: SegmentReceiver, n: int) -> list[dict[str, Any]]:
    assert segment_middleware.flush(10)
    return receiver.wait_for(n)


def pages(receiver: SegmentReceiver) -> list[dict[str, Any]]:
    return [m for m in receiver.messages if m["type"] == "page"]


def test_page_call_has_spec_fields(segment: SegmentReceiver) -> None:
    client = Client(HTTP_USER_AGENT="pytest-ua", HTTP_ACCEPT_LANGUAGE="de-CH,de;q=0.9,en;q=0.5")
    response = client.get(
        "/?utm_source=news&utm_medium=email&utm_campaign=launch&utm_term=t&utm_content=c&token=s3cr3t&x=1",
        HTTP_REFERER="https://ref.example/page?password=hunter2",
    )
    assert response.status_code == 200
    (msg,) = flushed(segment, 1)
    assert msg["type"] == "page"
    assert msg["name"] == "home"
    props = msg["properties"]
    assert props["path"] == "/"
    assert props["method"] == "GET"
    assert props["status"] == 200
    assert props["title"] == "Home"
    assert props["url"].startswith("http://testserver/?utm_source=news")
    assert "s3cr3t" not in props["url"] and "s3cr3t" not in props["search"]
    assert "token=%5BREDACTED%5D" in props["search"]
    assert "hunter2" not in props["referrer"] and props["referrer"].startswith("https://ref.example/page?")
    ctx = msg["context"]
    assert ctx["ip"] == "127.0.0.1"
    assert ctx["userAgent"] == "pytest-ua"
    assert ctx["locale"] == "de-CH"
    assert ctx["campaign"] == {
        "source": "news",
        "medium": "email",
        "name": "launch",
        "term": "t",
        "content": "c",
    }
    assert ctx["page"]["path"] == "/" and ctx["page"]["url"] == props["url"]
    assert ctx["library"]["name"] == "segment-middleware"
    assert "userId" not in msg
    # A new visitor gets the cookie, and the page call carries the same id.
    cookie = response.cookies["ajs_anonymous_id"]
    assert cookie.value == f"%22{msg['anonymousId']}%22"
    assert cookie["path"] == "/" and cookie["samesite"] == "Lax" and not cookie["httponly"]
    assert int(cookie["max-age"]) == 365 * 24 * 3600
    assert msg["messageId"] and msg["timestamp"].endswith("Z")


def test_returning_visitor_keeps_id_and_gets_no_new_cookie(segment: SegmentReceiver) -> None:
    client = Client()
    client.cookies["ajs_anonymous_id"] = "%22abc-123%22"
    response = client.get("/")
    assert "ajs_anonymous_id" not in response.cookies
    (msg,) = flushed(segment, 1)
    assert msg["anonymousId"] == "abc-123"


def test_tracker_calls_share_ids_and_context(segment: SegmentReceiver) -> None:
    client = Client(HTTP_X_ANONYMOUS_ID="hdr-id-1")
    assert client.get("/products/blue-shoe/").status_code == 200
    msgs = flushed(segment, 2)
    track = next(m for m in msgs if m["type"] == "track")
    page = next(m for m in msgs if m["type"] == "page")
    assert track["event"] == "Product Viewed"
    assert track["properties"] == {"slug": "blue-shoe", "price": 9.5}
    assert track["anonymousId"] == page["anonymousId"] == "hdr-id-1"
    assert track["context"]["page"]["path"] == "/products/blue-shoe/"
    assert page["name"] == "product"
    assert track["messageId"] != page["messageId"]


def test_authenticated_user_and_login_identify(segment: SegmentReceiver) -> None:
    client = Client()
    client.cookies["ajs_anonymous_id"] = "anon-before-login"
    client.get("/signin/?u=bob")
    msgs = flushed(segment, 2)
    identify = next(m for m in msgs if m["type"] == "identify")
    from django.contrib.auth.models import User

    bob = User.objects.get(username="bob")
    assert identify["userId"] == str(bob.pk) and identify["anonymousId"] == "anon-before-login"
    assert next(m for m in msgs if m["type"] == "page")["userId"] == str(bob.pk)
    segment.clear()
    client.get("/")
    (page,) = flushed(segment, 1)
    assert page["userId"] == str(bob.pk)


def test_a_visitor_without_a_session_costs_no_user_load(segment: SegmentReceiver) -> None:
    """Django's lazy user is left unloaded when the request has no session key (it could
    only be AnonymousUser), and loaded as before once there is a session."""
    from django.utils.functional import empty

    client = Client()
    response = client.get("/")  # the view never reads request.user
    assert response.wsgi_request.user._wrapped is empty
    client.get("/signin/?u=dora")
    response = client.get("/")  # a session cookie now: the user is loaded for the userId
    assert response.wsgi_request.user._wrapped is not empty
    from django.contrib.auth.models import User

    dora = User.objects.get(username="dora")
    by_path = {m["properties"]["path"]: m.get("userId") for m in flushed(segment, 4) if m["type"] == "page"}
    assert by_path["/signin/"] == str(dora.pk)
    page_user_ids = [m.get("userId") for m in segment.messages if m["type"] == "page" and m["name"] == "home"]
    assert page_user_ids == [None, str(dora.pk)]


class TokenUserMiddleware:
    """An app's own lazy user (a token scheme), set after AuthenticationMiddleware."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        from django.contrib.auth.models import User
        from django.utils.functional import SimpleLazyObject

        def by_token() -> Any:
            return User.objects.get_or_create(username=request.headers["X-Token"])[0]

        if "X-Token" in request.headers:
            request.user = SimpleLazyObject(by_token)
        return self.get_response(request)


def test_an_apps_own_lazy_user_is_still_loaded(segment: SegmentReceiver) -> None:
    from django.conf import settings as django_settings

    chain = list(django_settings.MIDDLEWARE)
    ours = chain.index("segment_middleware.django.SegmentMiddleware")
    chain.insert(ours, f"{__name__}.TokenUserMiddleware")
    with override_settings(MIDDLEWARE=chain):
        Client().get("/", HTTP_X_TOKEN="erin")
    from django.contrib.auth.models import User

    (page,) = flushed(segment, 1)
    assert page["userId"] == str(User.objects.get(username="erin").pk)


def test_identify_switches_user_id_for_the_rest_of_the_request(segment: SegmentReceiver) -> None:
    Client().get("/identify/")
    msgs = flushed(segment, 3)
    by_type = {m["type"]: m for m in msgs}
    assert by_type["identify"]["userId"] == "u-77"
    assert by_type["identify"]["traits"] == {"plan": "pro"}
    assert by_type["track"]["userId"] == "u-77"
    assert by_type["page"]["userId"] == "u-77"


def test_view_that_raises_still_sends_page_with_500(segment: SegmentReceiver) -> None:
    client = Client()
    with pytest.raises(RuntimeError, match="view failed"):
        client.get("/boom/")
    (msg,) = flushed(segment, 1)
    assert msg["properties"]["status"] == 500
    assert msg["name"] == "boom"


def test_excluded_path_sends_nothing_and_sets_no_cookie(segment: SegmentReceiver) -> None:
    response = Client().get("/health")
    assert response.status_code == 200
    assert "ajs_anonymous_id" not in response.cookies
    Client().get("/")  # a tracked request afterwards proves delivery works
    flushed(segment, 1)
    assert [m["properties"]["path"] for m in segment.messages] == ["/"]


USER_ID_CALLS: list[str] = []


def counting_user_id(request: Any) -> str:
    USER_ID_CALLS.append(request.path)
    return "u-42"


def test_untracked_requests_never_look_up_the_user(receiver: SegmentReceiver, store_path: str) -> None:
    """An excluded path or an opted-out visitor must not cost an auth lookup (with
    sessions that is a cookie decode and a user query)."""
    config = {"WRITE_KEY": WRITE_KEY, "HOST": receiver.url, "LOCAL_STORE": store_path}
    with override_settings(SEGMENT={**config, "USER_ID": counting_user_id}):
        conf.reset()
        USER_ID_CALLS.clear()
        try:
            assert Client().get("/health").status_code == 200
            assert Client().get("/", HTTP_SEC_GPC="1").status_code == 200
            assert USER_ID_CALLS == []
            assert Client().get("/").status_code == 200
            assert USER_ID_CALLS == ["/"]
            (msg,) = flushed(receiver, 1)
            assert msg["userId"] == "u-42"
        finally:
            segment_middleware.flush(5)
            conf.reset()


@pytest.mark.parametrize(
    ("proxy_setting", "expected"),
    [(None, "http://testserver/"), (("HTTP_X_FORWARDED_PROTO", "https"), "https://testserver/")],
)
def test_page_url_scheme_follows_secure_proxy_ssl_header(
    segment: SegmentReceiver, proxy_setting: tuple[str, str] | None, expected: str
) -> None:
    """The scheme comes from the WSGI server unless SECURE_PROXY_SSL_HEADER says to trust
    the proxy, exactly as request.scheme would say; the new visitor's cookie is Secure then."""
    with override_settings(SECURE_PROXY_SSL_HEADER=proxy_setting):
        response = Client().get("/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert bool(response.cookies["ajs_anonymous_id"]["secure"]) == expected.startswith("https")
    (msg,) = flushed(segment, 1)
    assert msg["properties"]["url"] == expected
    assert msg["context"]["page"]["url"] == expected


@pytest.mark.parametrize("header", [{"HTTP_SEC_GPC": "1"}])
def test_gpc_opt_out_is_untracked_but_views_still_work(segment: SegmentReceiver, header: dict) -> None:
    response = Client(**header).get("/products/x/")
    assert response.status_code == 200
    assert "ajs_anonymous_id" not in response.cookies
    who = Client(**header).get("/whoami/").json()
    assert who["same"] is True and who["enabled"] is False
    Client().get("/")
    flushed(segment, 1)
    assert [m["type"] for m in segment.messages] == ["page"]


def test_current_is_the_request_tracker_and_none_outside(segment: SegmentReceiver) -> None:
    who = Client().get("/whoami/").json()
    assert who["same"] is True and who["enabled"] is True and who["anonymousId"]
    assert segment_middleware.current() is None


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("event", "event must be a non-empty string"),
        ("props", "properties must be a mapping"),
        ("value", "properties['bad']: object is not JSON-serializable"),
    ],
)
def test_misuse_raises_at_the_call_naming_the_problem(
    segment: SegmentReceiver, kind: str, needle: str
) -> None:
    response = Client().get(f"/misuse/?kind={kind}")
    assert response.status_code == 400
    assert needle in response.content.decode()


def test_streaming_response_gets_page_call(segment: SegmentReceiver) -> None:
    response = Client().get("/stream/")
    assert b"".join(response.streaming_content) == b"ab"
    (msg,) = flushed(segment, 1)
    assert msg["properties"]["status"] == 200


def test_async_view_runs_natively_with_user(segment: SegmentReceiver) -> None:
    async def go() -> Any:
        client = AsyncClient()
        await client.get("/signin/?u=carol")  # sync view under the async handler
        return await client.get("/async/")

    response = asyncio.run(go())
    from django.contrib.auth.models import User

    carol = User.objects.get(username="carol")
    assert response.json() == {"user": str(carol.pk)}
    msgs = flushed(segment, 4)
    track = next(m for m in msgs if m["type"] == "track")
    assert track["event"] == "Async Tracked" and track["userId"] == str(carol.pk)
    async_page = next(m for m in msgs if m["type"] == "page" and m["name"] == "async")
    assert async_page["userId"] == str(carol.pk)


def test_async_view_that_raises_sends_500(segment: SegmentReceiver) -> None:
    async def go() -> Any:
        return await AsyncClient(raise_request_exception=False).get("/async-boom/")

    response = asyncio.run(go())
    assert response.status_code == 500
    (msg,) = flushed(segment, 1)
    assert msg["properties"]["status"] == 500


def test_middleware_is_sync_and_async_capable() -> None:
    from segment_middleware.django import SegmentMiddleware

    assert SegmentMiddleware.sync_capable and SegmentMiddleware.async_capable


def test_system_checks_report_bad_settings_and_order() -> None:
    from django.core.checks import run_checks

    with override_settings(SEGMENT={"FLUSH_AT": "lots", "HOST": "ftp://x", "NOPE": 1}):
        errors = [e for e in run_checks() if e.id.startswith("segment.")]
    by_id = {e.id: e.msg for e in errors}
    assert sorted(by_id) == ["segment.E000", "segment.E002", "segment.E024"], "every bad setting, each its id"
    assert "SEGMENT['FLUSH_AT']" in by_id["segment.E024"] and "SEGMENT['HOST']" in by_id["segment.E002"]
    assert by_id["segment.E000"] == "SEGMENT['NOPE']: unknown setting"
    from django.conf import settings

    misordered = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "segment_middleware.django.SegmentMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    with override_settings(MIDDLEWARE=misordered):
        errors = [e for e in run_checks() if e.id.startswith("segment.")]
    assert [e.id for e in errors] == ["segment.E100"]
    assert settings.MIDDLEWARE[-1] == "segment_middleware.django.SegmentMiddleware"
    with override_settings(SEGMENT={"WRITE_KEY": 12345}):
        errors = [e for e in run_checks() if e.id.startswith("segment.")]
    assert [e.id for e in errors] == ["segment.E001"] and "12345" not in errors[0].msg
    with override_settings(SEGMENT=["not", "a", "dict"]):
        errors = [e for e in run_checks() if e.id.startswith("segment.")]
    assert [e.id for e in errors] == ["segment.E000"] and "must be a dict" in errors[0].msg
    with override_settings(SEGMENT={"EVENT_CATEGORIES": {"Order *": "marketing"}}):
        errors = [e for e in run_checks() if e.id.startswith("segment.")]
    assert [(e.id, e.level) for e in errors] == [("segment.W102", 30)], "categories without CONSENT"


def test_bad_settings_fail_at_startup_without_leaking_key() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(SEGMENT={"WRITE_KEY": "has space secret", "TIMEOUT": -1}):
        conf.reset()
        with pytest.raises(ImproperlyConfigured) as info:
            Client().get("/")
    conf.reset()
    assert "secret" not in str(info.value)


UUID = "6f1c2b7e-0a4d-4c1e-9b2f-3a5d8e7c1f00"


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (f"ajs_anonymous_id=%22{UUID}%22", UUID),  # analytics.js classic (JSON, URL-encoded)
        (f"ajs_anonymous_id={UUID}", UUID),  # analytics-next raw
        (f'ajs_anonymous_id="{UUID}"', UUID),  # JSON quotes not URL-encoded
        (f"other=1; ajs_anonymous_id=%22{UUID}%22; more=2", UUID),
        ("ajs_anonymous_id=", None),
        ("ajs_anonymous_id=%22%22", None),
        ("ajs_anonymous_id=" + "a" * 500, None),
        ("ajs_anonymous_id=abc%07def", None),  # control character
        ("ajs_anonymous_id=abc\x01def", None),
        ("ajs_anonymous_id=%FF%FE%22", None),  # not UTF-8
        ("ajs_anonymous_id=\xff\xfe", None),  # latin-1 decoded raw bytes
        ("xajs_anonymous_id=nope", None),
        ("garbage;;; =; ===", None),
    ],
)
def test_cookie_forms(segment: SegmentReceiver, cookie: str, expected: str | None) -> None:
    response = Client(HTTP_COOKIE=cookie).get("/")
    assert response.status_code == 200
    (msg,) = flushed(segment, 1)
    if expected is None:
        fresh = msg["anonymousId"]
        assert len(fresh) == 36 and fresh.count("-") == 4
        assert response.cookies["ajs_anonymous_id"].value == f"%22{fresh}%22"
    else:
        assert msg["anonymousId"] == expected
        assert "ajs_anonymous_id" not in response.cookies


def test_header_is_used_when_cookie_is_absent_or_invalid(segment: SegmentReceiver) -> None:
    Client(HTTP_X_ANONYMOUS_ID="from-header").get("/")
    Client(HTTP_X_ANONYMOUS_ID="from-header-2", HTTP_COOKIE="ajs_anonymous_id=").get("/")
    Client(HTTP_X_ANONYMOUS_ID="x" * 101).get("/")
    msgs = flushed(segment, 3)
    ids = {m["anonymousId"] for m in msgs}
    assert {"from-header", "from-header-2"} < ids
    (fresh,) = ids - {"from-header", "from-header-2"}
    assert len(fresh) == 36


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cookie=st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=300))
def test_any_cookie_header_is_served(segment: SegmentReceiver, cookie: str) -> None:
    """Whatever the Cookie header holds, the request is served and the id is sane."""
    response = Client(HTTP_COOKIE=cookie, HTTP_X_ANONYMOUS_ID=cookie[:120]).get("/")
    assert response.status_code == 200
    tracker_cookie = response.cookies.get("ajs_anonymous_id")
    if tracker_cookie is not None:
        value = tracker_cookie.value
        assert value.startswith("%22") and value.endswith("%22") and len(value) == 42
