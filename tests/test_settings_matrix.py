"""Every request-level setting of the README's table, on every adapter it applies to.

Django (sync and async), Flask, plain ASGI and plain WSGI run the same small app
(``tests/adapters.py``); each test sets one setting and checks only what a user sees: the
response's ``Set-Cookie`` and what reached the receiver after ``segment_middleware.flush()``.
"Nothing was sent" is always checked against a marker request sent after it, so an empty
receiver cannot pass for a slow one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matrix_hooks
import pytest
from adapters import ADAPTERS, App, running, settle  # importing it sets Django up
from django.core.management import call_command
from helpers import WRITE_KEY, stored
from segment_receiver import SegmentReceiver

import segment_middleware

call_command("migrate", run_syncdb=True, verbosity=0)

ALL = list(ADAPTERS)
WITH_LOGIN = ["django", "django-async", "flask"]
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class Harness:
    """One adapter and one receiver; ``app(**settings)`` starts the adapter's app."""

    def __init__(self, adapter: str, receiver: SegmentReceiver, store_path: str) -> None:
        self.adapter = adapter
        self.receiver = receiver
        self.store_path = store_path
        self._apps = contextlib.ExitStack()

    def app(self, **settings: Any) -> App:
        base = {"write_key": WRITE_KEY, "host": self.receiver.url, "local_store": self.store_path}
        base["flush_interval"] = 0.05
        return self._apps.enter_context(running(self.adapter, {**base, **settings}))

    def close(self) -> None:
        self._apps.close()

    def messages(self) -> list[dict[str, Any]]:
        settle()
        return self.receiver.messages

    def pages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages() if m["type"] == "page"]

    def page_for(self, marker: str) -> dict[str, Any]:
        found = [p for p in self.pages() if p["properties"]["search"] == f"?n={marker}"]
        assert len(found) == 1, f"expected one page call for n={marker}, got {len(found)}"
        return found[0]

    def markers(self) -> list[str]:
        """The ``n`` of every page call received, in arrival order."""
        return [p["properties"]["search"].removeprefix("?n=") for p in self.pages()]


@pytest.fixture(params=ALL)
def h(request: pytest.FixtureRequest, receiver: SegmentReceiver, store_path: str) -> Iterator[Harness]:
    harness = Harness(request.param, receiver, store_path)
    yield harness
    harness.close()


@pytest.fixture(params=["django", "django-async"])
def h_django(request: pytest.FixtureRequest, receiver: SegmentReceiver, store_path: str) -> Iterator[Harness]:
    """Django only: sign-up is a user created during an anonymous visitor's request
    (Flask-Login has no such signal; Flask apps call ``request.segment.b2b.signed_up()``)."""
    harness = Harness(request.param, receiver, store_path)
    yield harness
    harness.close()


@pytest.fixture(params=WITH_LOGIN)
def h_login(request: pytest.FixtureRequest, receiver: SegmentReceiver, store_path: str) -> Iterator[Harness]:
    harness = Harness(request.param, receiver, store_path)
    yield harness
    harness.close()


# ---------------------------------------------------------------------- who is tracked
@pytest.mark.parametrize(
    "hook", [matrix_hooks.track_unless_header, "matrix_hooks.track_unless_header"], ids=["callable", "dotted"]
)
def test_should_track_false_sends_nothing_and_sets_no_cookie(h: Harness, hook: Any) -> None:
    app = h.app(should_track=hook)
    skipped = app.get("/track?n=skipped", {"X-No-Track": "1"})
    assert skipped.status == 200 and skipped.cookie("ajs_anonymous_id") is None
    kept = app.get("/?n=kept")
    assert kept.cookie("ajs_anonymous_id") is not None
    assert h.markers() == ["kept"]
    assert not [m for m in h.messages() if m["type"] == "track"], "the untracked view's track was sent"


def test_should_track_that_raises_counts_as_tracked(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    app = h.app(should_track=matrix_hooks.raising_hook)
    assert app.get("/?n=a").status == 200
    assert h.markers() == ["a"]
    assert "SHOULD_TRACK raised RuntimeError" in caplog.text
    assert "jane@example.com" not in caplog.text


@pytest.mark.parametrize(("honor", "tracked"), [(None, False), (True, False), (False, True)])
def test_honor_gpc(h: Harness, honor: bool | None, tracked: bool) -> None:
    app = h.app() if honor is None else h.app(honor_gpc=honor)
    response = app.get("/?n=gpc", {"Sec-GPC": "1"})
    assert (response.cookie("ajs_anonymous_id") is not None) is tracked
    app.get("/?n=marker", {"Sec-GPC": "0"})
    assert h.markers() == (["gpc", "marker"] if tracked else ["marker"])


@pytest.mark.parametrize(("honor", "tracked"), [(None, True), (False, True), (True, False)])
def test_honor_dnt(h: Harness, honor: bool | None, tracked: bool) -> None:
    app = h.app() if honor is None else h.app(honor_dnt=honor)
    response = app.get("/?n=dnt", {"DNT": "1"})
    assert (response.cookie("ajs_anonymous_id") is not None) is tracked
    app.get("/?n=marker")
    assert h.markers() == (["dnt", "marker"] if tracked else ["marker"])


def test_page_methods(h: Harness) -> None:
    app = h.app(page_methods=["get"])
    posted = app.post("/?n=post")
    assert posted.status == 200 and posted.cookie("ajs_anonymous_id") is None
    app.get("/?n=get")
    assert h.markers() == ["get"]
    assert h.page_for("get")["properties"]["method"] == "GET"


def test_every_method_is_paged_by_default(h: Harness) -> None:
    app = h.app()
    app.post("/?n=post")
    assert h.page_for("post")["properties"]["method"] == "POST"


def test_excluded_paths_send_nothing_but_views_still_get_a_tracker(h: Harness) -> None:
    app = h.app(exclude_paths=["/track"])
    response = app.get("/track?n=excluded")
    assert response.status == 200, "the view's tracker calls must not fail on an excluded path"
    assert response.cookie("ajs_anonymous_id") is None
    assert app.get("/health?n=health").cookie("ajs_anonymous_id") is not None, "the default list is replaced"
    assert sorted(h.markers()) == ["health"]
    assert not [m for m in h.messages() if m["type"] == "track"]


@pytest.mark.parametrize("mount", ["/app", "/shop/eu"])
def test_under_a_mount_exclusions_match_the_apps_own_paths(h: Harness, mount: str) -> None:
    """EXCLUDE_PATHS matches the path the app's routes see (SCRIPT_NAME / root_path left
    off), on every adapter; the page call still shows the path the browser asked for."""
    app = h.app(exclude_paths=["/health"])
    excluded = app.get(f"{mount}/health?n=health", mount=mount)
    assert excluded.status == 200 and excluded.cookie("ajs_anonymous_id") is None
    app.get(f"{mount}/track?n=m", mount=mount)
    page = h.page_for("m")
    assert page["properties"]["path"] == f"{mount}/track" == page["context"]["page"]["path"]
    assert page["properties"]["url"].endswith(f"{mount}/track?n=m")
    assert h.markers() == ["m"], "the mounted /health sent nothing"


# ---------------------------------------------------------------------- the anonymousId
def test_custom_cookie_and_header_names(h: Harness) -> None:
    app = h.app(anonymous_id_cookie="visitor", anonymous_id_header="X-Visitor")
    assert app.get("/?n=cookie", {"Cookie": "visitor=%22c-1%22"}).set_cookies == []
    fresh = app.get("/?n=old-name", {"Cookie": "ajs_anonymous_id=%22old%22"})
    written = fresh.cookie("visitor")
    assert written is not None and fresh.cookie("ajs_anonymous_id") is None
    app.get("/?n=header", {"X-Visitor": "h-1"})
    app.get("/?n=default-header", {"X-Anonymous-Id": "ignored"})
    assert h.page_for("cookie")["anonymousId"] == "c-1"
    old = h.page_for("old-name")["anonymousId"]
    assert old != "old" and written["value"] == f"%22{old}%22"
    assert h.page_for("header")["anonymousId"] == "h-1"
    assert h.page_for("default-header")["anonymousId"] != "ignored"


def test_set_cookie_false_still_sends_an_anonymous_id(h: Harness) -> None:
    app = h.app(set_cookie=False)
    response = app.get("/?n=new")
    assert response.set_cookies == []
    assert UUID4.match(h.page_for("new")["anonymousId"])


@pytest.mark.parametrize(
    ("settings", "domain", "max_age"),
    [
        ({}, None, 365 * 24 * 3600),
        ({"cookie_domain": ".example.com", "cookie_max_age": 60}, ".example.com", 60),
    ],
    ids=["default", "custom"],
)
def test_cookie_attributes(h: Harness, settings: dict[str, Any], domain: str | None, max_age: int) -> None:
    app = h.app(**settings)
    cookie = app.get("/?n=new").cookie("ajs_anonymous_id")
    assert cookie is not None
    assert cookie.get("domain") == domain
    assert int(cookie["max-age"]) == max_age
    assert cookie["path"] == "/" and cookie["samesite"].lower() == "lax"
    assert "httponly" not in cookie and "secure" not in cookie  # http: not Secure; analytics.js reads it
    assert cookie["value"] == f"%22{h.page_for('new')['anonymousId']}%22"


def test_https_gives_a_secure_cookie_and_an_https_url(h: Harness) -> None:
    cookie = h.app().get("/?n=s", https=True).cookie("ajs_anonymous_id")
    assert cookie is not None and "secure" in cookie
    assert h.page_for("s")["properties"]["url"].startswith("https://")


def test_a_new_visitors_response_keeps_the_apps_own_headers(h: Harness) -> None:
    response = h.app().get("/?n=new")
    assert response.cookie("ajs_anonymous_id") is not None
    assert (response.header("Content-Type") or "").startswith("text/")


# ---------------------------------------------------------------------- the userId
@pytest.mark.parametrize(
    "hook", [matrix_hooks.user_from_header, "matrix_hooks.user_from_header"], ids=["callable", "dotted"]
)
def test_user_id_setting(h: Harness, hook: Any) -> None:
    app = h.app(user_id=hook)
    app.get("/track?n=known", {"X-Test-User": "u-9"})
    app.get("/?n=page-only", {"X-Test-User": "u-10"})
    app.get("/?n=anonymous")
    assert h.page_for("known")["userId"] == "u-9"
    assert h.page_for("page-only")["userId"] == "u-10"
    assert "userId" not in h.page_for("anonymous")
    (track,) = [m for m in h.messages() if m["type"] == "track"]
    assert track["userId"] == "u-9"


def test_a_view_that_raises_sends_its_page_call_with_500_and_the_user(h: Harness) -> None:
    app = h.app(user_id=matrix_hooks.user_from_header)
    assert app.get("/boom?n=boom", {"X-Test-User": "u-5"}).status == 500
    page = h.page_for("boom")
    assert page["properties"]["status"] == 500 and page["userId"] == "u-5"


def test_user_id_that_raises_means_anonymous(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    app = h.app(user_id=matrix_hooks.raising_hook)
    assert app.get("/?n=a").status == 200
    page = h.page_for("a")
    assert "userId" not in page and page["anonymousId"]
    assert "jane@example.com" not in caplog.text


# ---------------------------------------------------------------------- page properties
def test_query_params_are_left_out_by_default(h: Harness) -> None:
    h.app().get("/?n=q&a=1")
    assert "query" not in h.page_for("q&a=1")["properties"]


def test_include_query_params_sends_the_redacted_query(h: Harness) -> None:
    h.app(include_query_params=True).get("/?n=q&a=1&token=s3cr3t")
    page = h.page_for("q&a=1&token=%5BREDACTED%5D")
    assert page["properties"]["query"] == {"n": "q", "a": "1", "token": "[REDACTED]"}
    assert "s3cr3t" not in str(page)


def test_custom_redact_query_params(h: Harness) -> None:
    app = h.app(redact_query_params=["foo"])
    app.get("/?n=r&foo=hide&bar=show", {"Referer": "https://ref.example/p?foo=hide2&x=1"})
    (page,) = h.pages()
    props = page["properties"]
    assert props["search"] == "?n=r&foo=%5BREDACTED%5D&bar=show"
    assert "hide" not in props["url"] and props["url"].endswith("?n=r&foo=%5BREDACTED%5D&bar=show")
    assert props["referrer"] == "https://ref.example/p?foo=%5BREDACTED%5D&x=1"
    assert page["context"]["page"]["search"] == props["search"]


def test_default_redaction_covers_tokens(h: Harness) -> None:
    h.app().get("/?n=d&token=t0k&password=pw&ok=1")
    (page,) = h.pages()
    assert page["properties"]["search"] == "?n=d&token=%5BREDACTED%5D&password=%5BREDACTED%5D&ok=1"
    assert "t0k" not in str(page) and "pw&" not in str(page)


def test_page_url_and_path_as_the_browser_sees_them(h: Harness) -> None:
    if h.adapter == "django-async":
        pytest.skip("Django's AsyncClient decodes the path as latin-1 (its own router 404s it)")
    h.app().get("/caf%C3%A9?n=utf8", {"Host": "shop.example:8080"})
    page = h.page_for("utf8")
    assert page["properties"]["path"] == "/café" == page["context"]["page"]["path"]
    assert page["properties"]["url"] == "http://shop.example:8080/café?n=utf8"


# ---------------------------------------------------------------------- context.ip
@pytest.mark.parametrize(
    ("trusted", "forwarded", "ip"),
    [
        (None, "203.0.113.9", "127.0.0.1"),
        (["127.0.0.1"], "203.0.113.9", "203.0.113.9"),
        (["127.0.0.0/8"], "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        (["127.0.0.1", "10.0.0.0/8"], "203.0.113.9, 10.1.2.3", "203.0.113.9"),
    ],
    ids=["untrusted-peer", "trusted-peer", "spoofed-hop-ignored", "two-proxies"],
)
def test_trusted_proxies(h: Harness, trusted: list[str] | None, forwarded: str, ip: str) -> None:
    app = h.app() if trusted is None else h.app(trusted_proxies=trusted)
    app.get("/?n=ip", {"X-Forwarded-For": forwarded})
    assert h.page_for("ip")["context"]["ip"] == ip


@pytest.mark.parametrize(
    ("anonymize", "forwarded", "ip"),
    [
        (False, None, "127.0.0.1"),
        (True, None, "127.0.0.0"),
        (True, "2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234::"),
        (False, "2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234:5678:9abc:def0:1234:5678"),
    ],
    ids=["off-v4", "v4", "v6", "off-v6"],
)
def test_anonymize_ip(h: Harness, anonymize: bool, forwarded: str | None, ip: str) -> None:
    app = h.app(anonymize_ip=anonymize, trusted_proxies=["127.0.0.1"])
    app.get("/?n=ip", {"X-Forwarded-For": forwarded} if forwarded else {})
    assert h.page_for("ip")["context"]["ip"] == ip


# ---------------------------------------------------------------------- hooks
def test_consent_is_sent_as_category_preferences(h: Harness) -> None:
    app = h.app(consent=matrix_hooks.consent_from_header)
    app.get("/track?n=c", {"X-Consent": "ads=0,analytics=1"})
    expected = {"categoryPreferences": {"ads": False, "analytics": True}}
    messages = h.messages()
    assert {m["type"] for m in messages} == {"page", "track"}
    for message in messages:
        assert message["context"]["consent"] == expected, message["type"]


def test_no_consent_setting_no_consent_context(h: Harness) -> None:
    h.app().get("/?n=c", {"X-Consent": "ads=0"})
    assert "consent" not in h.page_for("c")["context"]


def test_consent_that_raises_sends_without_consent(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    app = h.app(consent=matrix_hooks.raising_hook)
    assert app.get("/?n=c").status == 200
    assert "consent" not in h.page_for("c")["context"]
    assert "CONSENT raised RuntimeError" in caplog.text


@pytest.mark.parametrize("traits", [None, matrix_hooks.traits_of, "matrix_hooks.traits_of"])
def test_identify_traits_on_log_in(h_login: Harness, traits: Any) -> None:
    app = h_login.app() if traits is None else h_login.app(identify_traits=traits)
    response = app.get("/login?n=login", {"Cookie": "ajs_anonymous_id=%22before-login%22"})
    assert response.status == 200
    messages = h_login.messages()
    (identify,) = [m for m in messages if m["type"] == "identify"]
    assert identify["anonymousId"] == "before-login"
    (page,) = [m for m in messages if m["type"] == "page"]
    assert identify["userId"] == page["userId"] and identify["userId"]
    expected = {} if traits is None else {"username": "matrix-user", "from_hook": True}
    assert identify["traits"] == expected


def test_log_out_gives_the_visitor_a_fresh_anonymous_id(h_login: Harness) -> None:
    """RESET_ON_LOGOUT (default on): after the log-out signal the request's page call
    carries a new anonymousId and no userId, the response sets it as the cookie, and the
    visitor's next request carries it."""
    app = h_login.app()
    response = app.get("/logout?n=out", {"Cookie": "ajs_anonymous_id=%22before%22"})
    cookie = response.cookie("ajs_anonymous_id")
    assert response.status == 200 and cookie is not None
    fresh = cookie["value"].strip('"').replace("%22", "")
    assert fresh and fresh != "before"
    app.get("/?n=next", {"Cookie": f"ajs_anonymous_id={cookie['value']}"})
    out, following = h_login.page_for("out"), h_login.page_for("next")
    assert out["anonymousId"] == following["anonymousId"] == fresh
    assert "userId" not in out and "userId" not in following
    (identify,) = [m for m in h_login.messages() if m["type"] == "identify"]
    assert identify["anonymousId"] == "before"  # the log-in was still the old visitor
    assert not [m for m in h_login.messages() if m["type"] == "track"]  # AUTH_EVENTS is off


def test_reset_on_logout_off_keeps_the_anonymous_id(h_login: Harness) -> None:
    app = h_login.app(reset_on_logout=False)
    response = app.get("/logout?n=out", {"Cookie": "ajs_anonymous_id=%22before%22"})
    assert response.cookie("ajs_anonymous_id") is None
    assert h_login.page_for("out")["anonymousId"] == "before"


def test_auth_events_send_signed_in_and_signed_out(h_login: Harness) -> None:
    app = h_login.app(auth_events=True)
    app.get("/logout?n=out", {"Cookie": "ajs_anonymous_id=%22before%22"})
    app.get("/login?n=in", {"Cookie": "ajs_anonymous_id=%22second%22"})
    tracks = [m for m in h_login.messages() if m["type"] == "track"]
    assert [(m["event"], m["anonymousId"]) for m in tracks] == [
        ("Signed In", "before"),
        ("Signed Out", "before"),
        ("Signed In", "second"),
    ]
    assert len({m["userId"] for m in tracks}) == 1 and tracks[0]["userId"]
    assert "userId" not in h_login.page_for("out")


@pytest.mark.parametrize("alias", [True, False], ids=["alias", "no-alias"])
def test_sign_up_sends_alias_and_signed_up_as_the_new_user(h_django: Harness, alias: bool) -> None:
    """A user created during an anonymous visitor's request is their sign-up."""
    h_login = h_django
    app = h_login.app(auth_events=True, alias_on_signup=alias)
    response = app.get("/signup?n=up", {"Cookie": "ajs_anonymous_id=%22visitor%22"})
    assert response.status == 200
    messages = h_login.messages()
    kinds = [(m["type"], m.get("event")) for m in messages if m["type"] != "page"]
    expected = [("track", "Signed Up"), ("identify", None), ("track", "Signed In")]
    assert kinds == ([("alias", None)] if alias else []) + expected
    new_user = next(m for m in messages if m["type"] == "identify")["userId"]
    assert all(m["userId"] == new_user and m.get("anonymousId", "visitor") == "visitor" for m in messages)
    if alias:
        (aliased,) = [m for m in messages if m["type"] == "alias"]
        assert aliased["previousId"] == "visitor"


def test_a_user_created_by_a_signed_in_user_is_no_sign_up(h_django: Harness) -> None:
    h_login = h_django
    from django.contrib.auth.models import User

    User.objects.get_or_create(username="matrix-user")  # outside a request: no sign-up either
    app = h_login.app(auth_events=True, alias_on_signup=True)
    assert app.get("/create-user?n=made").status == 200  # signs in, then creates another user
    messages = h_login.messages()
    assert [m.get("event") for m in messages if m["type"] == "track"] == ["Signed In"]
    assert not [m for m in messages if m["type"] == "alias"]


def test_identify_traits_that_raise_send_the_identify_without_traits(
    h_login: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    app = h_login.app(identify_traits=matrix_hooks.raising_hook)
    assert app.get("/login?n=login").status == 200
    (identify,) = [m for m in h_login.messages() if m["type"] == "identify"]
    assert identify["traits"] == {}
    assert "IDENTIFY_TRAITS raised RuntimeError" in caplog.text and "jane@example.com" not in caplog.text


def test_identify_traits_that_cannot_be_sent_skip_the_identify(
    h_login: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    app = h_login.app(identify_traits=lambda user: {"bad": object()})
    assert app.get("/login?n=login").status == 200
    assert [m["type"] for m in h_login.messages()] == ["page"]
    assert "identify on log-in skipped" in caplog.text and "bad" in caplog.text


def test_before_send_enriches(h: Harness) -> None:
    app = h.app(before_send=[matrix_hooks.enrich], user_id=matrix_hooks.user_from_header)
    app.get("/track?n=e", {"X-Test-User": "u-1"})
    app.get("/?n=page-only", {"X-Test-User": "u-2"})
    messages = h.messages()
    assert len(messages) == 3 and all(m["properties"]["enriched"] is True for m in messages)
    assert h.page_for("page-only")["userId"] == "u-2" and h.page_for("e")["userId"] == "u-1"


def test_before_send_drops_and_counts(h: Harness) -> None:
    before = segment_middleware.stats()
    h.app(before_send="matrix_hooks.drop_tracks").get("/track?n=d")
    assert [m["type"] for m in h.messages()] == ["page"]
    after = segment_middleware.stats()
    assert after["dropped"] - before["dropped"] == 1


def test_before_send_that_raises_fails_only_that_message(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    before = segment_middleware.stats()
    response = h.app(before_send=[matrix_hooks.raise_on_tracks]).get("/track?n=r")
    assert response.status == 200
    assert [m["type"] for m in h.messages()] == ["page"]
    assert segment_middleware.stats()["failed"] - before["failed"] == 1
    assert "could not build a track message" in caplog.text


def test_integrations_default_object(h: Harness) -> None:
    h.app(integrations={"All": False, "Mixpanel": True}).get("/track?n=i")
    messages = h.messages()
    assert len(messages) == 2
    assert all(m["integrations"] == {"All": False, "Mixpanel": True} for m in messages)


def test_integrations_per_event(h: Harness) -> None:
    """INTEGRATIONS["events"]: the named event's track calls get their own integrations over
    the default; other calls get the default, and never the "events" key itself."""
    per_event = {"Matrix Event": {"Mixpanel": True, "Amplitude": False}}
    h.app(integrations={"All": True, "Mixpanel": False, "events": per_event}).get("/track?n=i")
    (track,) = [m for m in h.messages() if m["type"] == "track"]
    assert track["integrations"] == {"All": True, "Mixpanel": True, "Amplitude": False}
    assert h.page_for("i")["integrations"] == {"All": True, "Mixpanel": False}


def test_no_integrations_setting_no_integrations_object(h: Harness) -> None:
    h.app().get("/?n=i")
    assert h.page_for("i").get("integrations", {}) == {}


# ---------------------------------------------------------------------- where messages go
def test_no_write_key_writes_to_the_local_store(h: Harness, tmp_path: Any) -> None:
    store = tmp_path / "elsewhere" / "local.sqlite3"
    h.app(write_key=None, local_store=str(store)).get("/track?n=local")
    settle()
    assert h.receiver.requests == [], "no write key: nothing goes over the network"
    messages = stored(store)
    assert sorted(m["type"] for m in messages) == ["page", "track"]
    assert {m["anonymousId"] for m in messages} and len({m["anonymousId"] for m in messages}) == 1


# ---------------------------------------------------------------------- our own failures
@pytest.mark.parametrize("step", ["begin", "end"])
def test_our_own_failure_never_breaks_the_request(
    h: Harness, step: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever goes wrong inside the package, the app's response is unchanged and the
    failure is logged. (The one test here that reaches inside: nothing public can make
    the core fail.)"""
    from segment_middleware.core import Runtime

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("segment internals broke")

    app = h.app()
    monkeypatch.setattr(Runtime, step, broken)
    for path in ("/?n=ours", "/track?n=ours"):
        response = app.get(path)
        assert response.status == 200 and response.cookie("ajs_anonymous_id") is None
    assert app.get("/boom?n=boom").status == 500
    monkeypatch.undo()
    assert h.pages() == []
    assert "segment internals broke" in caplog.text
    assert f"could not {'start' if step == 'begin' else 'finish'} tracking" in caplog.text


def test_a_page_without_a_query(h: Harness) -> None:
    h.app().get("/track")
    (page,) = h.pages()
    assert page["properties"]["search"] == "" == page["context"]["page"]["search"]
    assert page["properties"]["url"].endswith("/track") and "campaign" not in page["context"]


# ---------------------------------------------------------------------- testing.capture()
def test_capture_collects_what_each_adapter_sends_and_nothing_leaves(h: Harness) -> None:
    """A user's test with their framework's own test client: the request's page call and
    the view's track are in ``events`` when the response is back (no flush), as the
    endpoint would read them; the endpoint and the local store get nothing."""
    from segment_middleware.testing import capture

    app = h.app()
    with capture() as events:
        response = app.get("/track?n=captured")
        assert response.status == 200
        assert [m["type"] for m in events] == ["track", "page"]
        track = events.assert_sent("track", event="Matrix Event")
        page = events.assert_sent("page", properties={"search": "?n=captured", "status": 200})
        assert track["anonymousId"] == page["anonymousId"]
        assert UUID4.match(page["messageId"]) and page["context"]["page"]["path"] == "/track"
    assert segment_middleware.flush(10)
    assert h.receiver.messages == [] and stored(Path(h.store_path)) == []
    app.get("/?n=after")  # delivery is back once the capture is over
    assert h.markers() == ["after"]
