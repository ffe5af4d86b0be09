"""The framework-neutral core, unit by unit: settings, identity, context, tracker, store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment_receiver import SegmentReceiver

from segment_middleware import ambient
from segment_middleware.context import (
    REDACTED,
    RequestFacts,
    client_ip,
    locale,
    redact_query,
    redact_url,
    request_context,
)
from segment_middleware.context import page_properties as _page_properties
from segment_middleware.core import Runtime
from segment_middleware.identity import (
    MAX_ID_LENGTH,
    cookie_spec,
    cookie_value,
    new_anonymous_id,
    parse_anonymous_id,
    set_cookie_header,
)
from segment_middleware.jsonable import jsonable
from segment_middleware.messages import Encoded
from segment_middleware.settings import DEFAULT_REDACT, Settings, SettingsError
from segment_middleware.store import LOCAL, SPOOL, Store
from segment_middleware.tracker import Tracker

QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
WORDS = frozenset(DEFAULT_REDACT)


@pytest.fixture(autouse=True)
def _keep_ambient_runtime() -> Iterator[None]:
    """configure() calls made here must not become what other test modules' tracker() uses."""
    before = ambient._configured
    yield
    ambient._configured = before


# ====================================================================== settings
def test_defaults_without_any_source() -> None:
    s = Settings.from_sources(environ={})
    assert s.write_key is None and s.uses_store
    assert s.host == "https://api.segment.io"
    assert s.exclude_paths == ("/health", "/favicon.ico")
    assert s.local_store == ".segment/events.sqlite3"
    assert s.trusted_proxies == ()
    assert s.honor_gpc is True and s.honor_dnt is False and s.spool is True


def test_environment_fallbacks() -> None:
    env = {
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": "https://events.eu1.segmentapis.com/",
        "SEGMENT_EXCLUDE_PATHS": "/health, /metrics ,,/static/",
        "SEGMENT_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1, ::1",
        "SEGMENT_LOCAL_STORE": "/tmp/somewhere/events.db",
    }
    s = Settings.from_sources(environ=env)
    assert s.write_key == WRITE_KEY and not s.uses_store
    assert s.host == "https://events.eu1.segmentapis.com"  # trailing slash dropped
    assert s.exclude_paths == ("/health", "/metrics", "/static/")
    assert s.trusted_proxies == ("10.0.0.0/8", "192.168.1.1", "::1")
    assert s.local_store == "/tmp/somewhere/events.db"


def test_real_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("SEGMENT_HOST", "http://127.0.0.1:1234")
    s = Settings.from_sources()
    assert s.write_key == WRITE_KEY and s.host == "http://127.0.0.1:1234"


def test_only_the_documented_environment_variables_are_read() -> None:
    s = Settings.from_sources(environ={"SEGMENT_FLUSH_AT": "7", "SEGMENT_WRITE_KEY": ""})
    assert s.flush_at == 100  # not an environment setting
    assert s.write_key is None  # empty means unset


def test_precedence_explicit_over_framework_over_environment() -> None:
    env = {"SEGMENT_HOST": "https://env.example", "SEGMENT_LOCAL_STORE": "env.db"}
    framework = {"host": "https://framework.example", "local_store": "framework.db", "flush_at": 5}
    explicit = {"host": "https://explicit.example"}
    s = Settings.from_sources(explicit, framework, environ=env)
    assert s.host == "https://explicit.example"
    assert s.local_store == "framework.db"
    assert s.flush_at == 5


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("flush_at", "25", 25),
        ("flush_interval", "0.25", 0.25),
        ("max_queue_size", 10.0, 10),
        ("set_cookie", "off", False),
        ("gzip", "YES", True),
        ("page_methods", "get, post", ("GET", "POST")),
        ("redact_query_params", ["Token", "X"], ("token", "x")),
        ("integrations", None, {}),
        ("before_send", None, ()),
        ("cookie_domain", "", None),
        ("max_retries", 0, 0),
        ("shutdown_timeout", 0, 0.0),
        ("max_in_flight", "4", 4),
        ("spool_max_mb", "0.5", 0.5),
    ],
)
def test_values_are_coerced(key: str, value: Any, expected: Any) -> None:
    assert getattr(Settings.from_sources({key: value}, environ={}), key) == expected


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("flush_at", "many", "must be a number >= 1"),
        ("flush_at", 0, "must be >= 1"),
        ("flush_at", 101, "at most 100"),
        ("flush_at", True, "must be a number"),
        ("flush_at", 1.5, "must be a number"),
        ("flush_interval", 0, "must be > 0"),
        ("timeout", -1, "must be > 0"),
        ("timeout", float("nan"), "must be a number > 0"),
        ("max_queue_size", [10], "must be a number"),
        ("max_retries", -1, "must be >= 0"),
        ("max_in_flight", 0, "must be >= 1 and <= 16"),
        ("max_in_flight", 17, "must be >= 1 and <= 16"),
        ("spool_max_mb", 0, "must be > 0"),
        ("host", "api.segment.io", "must be an http(s) URL"),
        ("host", "https://a b.example", "must be an http(s) URL"),
        ("host", 443, "must be an http(s) URL"),
        ("exclude_paths", ["health"], "must start with '/'"),
        ("exclude_paths", {"/a": 1}, "must be a list of strings"),
        ("exclude_paths", [b"/a"], "must be a list of strings"),
        ("trusted_proxies", ["10.0.0.0/33"], "not an IP address or network"),
        ("trusted_proxies", "proxy.internal", "not an IP address or network"),
        ("page_methods", ["GET", "G3T"], "not an HTTP method"),
        ("anonymous_id_cookie", "ajs id", "not a valid cookie name"),
        ("anonymous_id_header", "X-Anon:Id", "not a valid header name"),
        ("set_cookie", "maybe", "must be True or False"),
        ("set_cookie", 1, "must be True or False"),
        ("tracking_plan", "no-such-plan.json", "no-such-plan.json: cannot be read"),
        ("plan_violations", "strict", "must be one of warn, drop, raise"),
        ("integrations", ["All"], "must be a dict"),
        ("integrations", {"events": ["Order Completed"]}, "must map event names to integrations"),
        ("integrations", {"events": {"Order Completed": True}}, "must map event names to integrations"),
        ("user_id", 42, "must be a callable or a dotted path"),
        ("user_id", "no_such_module_xyz.func", "cannot import"),
        ("before_send", [print, 3], "must be a callable"),
        ("cookie_domain", 5, "must be a string"),
        ("local_store", "a\x00b", "not a valid file path"),
        ("write_key", 12345, "must be a string"),
        ("nonsense", 1, "unknown setting"),
    ],
)
def test_invalid_values_fail_naming_the_setting(key: str, value: Any, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_sources({"write_key": WRITE_KEY, key: value}, environ={})
    message = str(info.value)
    assert message.startswith(f"{key}: ")
    assert fragment in message
    assert WRITE_KEY not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("style", "name"),
    [
        ("kwarg", "flush_at"),
        ("flask", "SEGMENT_FLUSH_AT"),
        ("django", "SEGMENT['FLUSH_AT']"),
        ("env", "SEGMENT_FLUSH_AT"),
    ],
)
def test_error_names_the_setting_the_way_the_user_spelled_it(style: str, name: str) -> None:
    with pytest.raises(SettingsError, match="^" + re.escape(name) + ": "):
        Settings.from_sources({"flush_at": "x"}, style=style, environ={})


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^SEGMENT_TRUSTED_PROXIES: "):
        Settings.from_sources(style="env", environ={"SEGMENT_TRUSTED_PROXIES": "bogus"})
    with pytest.raises(SettingsError, match=r"^SEGMENT_EXCLUDE_PATHS: "):
        Settings.from_sources(style="env", environ={"SEGMENT_EXCLUDE_PATHS": "health"})


@pytest.mark.parametrize(
    "bad_key",
    [
        WRITE_KEY + " trailing-space",
        WRITE_KEY + "\n",
        WRITE_KEY + "\x00",
        WRITE_KEY * 20,
    ],
    ids=["space", "newline", "nul", "too-long"],
)
def test_bad_write_key_is_never_echoed(bad_key: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_sources({"write_key": bad_key}, environ={})
    assert str(info.value).startswith("write_key: ")
    assert WRITE_KEY not in str(info.value)
    with pytest.raises(SettingsError) as info:
        Settings.from_sources(style="env", environ={"SEGMENT_WRITE_KEY": bad_key})
    assert str(info.value).startswith("SEGMENT_WRITE_KEY: ")
    assert WRITE_KEY not in str(info.value)


def test_repr_and_replace_never_show_the_key() -> None:
    s = Settings.from_sources({"write_key": WRITE_KEY}, environ={})
    assert WRITE_KEY not in repr(s) and "write_key=<set>" in repr(s)
    assert WRITE_KEY not in str(s)
    changed = s.replace(flush_at=7)
    assert changed.flush_at == 7 and changed.write_key == WRITE_KEY
    with pytest.raises(SettingsError, match=r"^flush_at: "):
        s.replace(flush_at=0)


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=False),
    st.text(max_size=30),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


# Callable settings import dotted paths; random text must not import arbitrary modules.
_PLAIN_SETTINGS = sorted(
    set(Settings.names())
    - {"write_key", "user_id", "should_track", "consent", "identify_traits", "before_send"}
)


@QUICK
@given(key=st.sampled_from(_PLAIN_SETTINGS), value=_ANY_VALUE)
def test_any_value_either_validates_or_raises_a_named_settings_error(key: str, value: Any) -> None:
    try:
        s = Settings.from_sources({"write_key": WRITE_KEY, key: value}, environ={})
    except SettingsError as exc:
        assert str(exc).startswith(f"{key}: ")
        assert WRITE_KEY not in str(exc)
    else:
        assert s.write_key == WRITE_KEY and WRITE_KEY not in repr(s)


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_retries", float("inf")), ("flush_at", float("-inf")), ("timeout", 10**400)],
)
def test_overflowing_numbers_are_a_settings_error(key: str, value: Any) -> None:
    with pytest.raises(SettingsError, match=f"^{re.escape(key)}: "):
        Settings.from_sources({key: value}, environ={})


# ====================================================================== identity
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("%22abc-123%22", "abc-123"),  # analytics.js classic: URL-encoded JSON string
        ('"abc-123"', "abc-123"),  # classic, not URL-encoded
        ("abc-123", "abc-123"),  # analytics-next raw
        ("%22a%2Db%22", "a-b"),  # encoded inside the quotes: general decoder
        ("2a3f1c9e-0000-4000-8000-000000000000", "2a3f1c9e-0000-4000-8000-000000000000"),
        ("a" * MAX_ID_LENGTH, "a" * MAX_ID_LENGTH),
        ("%22" + "a" * MAX_ID_LENGTH + "%22", "a" * MAX_ID_LENGTH),
        ("a" * (MAX_ID_LENGTH + 1), None),
        ("%22" + "a" * (MAX_ID_LENGTH + 1) + "%22", None),
        ("x" * 100_000, None),
        ("", None),
        (None, None),
        ("%22%22", None),
        ('""', None),
        ("%22a%00b%22", None),
        ("a\x00b", None),
        ("a\tb", None),
        ("a\x7fb", None),
        ("%0A", None),
        ("%E2%80%A8", None),  # U+2028 line separator
        ("%FF%FE", None),  # not UTF-8
        ("ü-id", None),  # not ASCII on the wire
        ('%22a\\"b%22', None),
        ("%22a\\b%22", None),  # a JSON escape in the classic form: not the id analytics.js reads
        ('"a\\u0041"', None),
        ("%22abc", None),
        ('a"b', None),
        ("%22" + "%41" * 100 + "%22", "A" * 100),  # every character percent-encoded
        ("%22" + "%C3%A9" * 60 + "%22", "é" * 60),  # 60 characters, 366 on the wire
        ("%22" + "%F0%9F%98%80" * 100 + "%22", "😀" * 100),  # the longest wire form of a valid id
        ("%22" + "%F0%9F%98%80" * 100 + "%41%22", None),  # 101 characters
        ("%22" + "%C3%A9" * 101 + "%22", None),
    ],
)
def test_parse_anonymous_id(raw: str | None, expected: str | None) -> None:
    assert parse_anonymous_id(raw) == expected


def _assert_valid_or_none(result: str | None) -> None:
    if result is not None:
        assert isinstance(result, str)
        assert 0 < len(result) <= MAX_ID_LENGTH
        assert result.isprintable() and '"' not in result


@QUICK
@given(st.text(max_size=400))
def test_parse_anonymous_id_never_raises_on_text(raw: str) -> None:
    _assert_valid_or_none(parse_anonymous_id(raw))


@QUICK
@given(st.binary(max_size=400))
def test_parse_anonymous_id_never_raises_on_bytes(raw: bytes) -> None:
    # WSGI servers hand over header bytes decoded as latin-1; ASGI adapters may do the same.
    _assert_valid_or_none(parse_anonymous_id(raw.decode("latin-1")))
    header = "ajs_anonymous_id=" + raw.decode("latin-1")
    _assert_valid_or_none(parse_anonymous_id(cookie_value(header, "ajs_anonymous_id")))


_ID_CHARS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", min_size=1)


@QUICK
@given(_ID_CHARS.filter(lambda s: len(s) <= MAX_ID_LENGTH))
def test_both_cookie_forms_and_the_written_form_read_back_as_the_same_id(anonymous_id: str) -> None:
    assert parse_anonymous_id(anonymous_id) == anonymous_id
    assert parse_anonymous_id(f"%22{anonymous_id}%22") == anonymous_id
    assert parse_anonymous_id(json.dumps(anonymous_id)) == anonymous_id
    spec = cookie_spec("ajs_anonymous_id", anonymous_id, 60, None, False)
    header = set_cookie_header(spec)
    value = header.split(";", 1)[0].split("=", 1)[1]
    assert parse_anonymous_id(cookie_value(f"other=1; ajs_anonymous_id={value}", "ajs_anonymous_id")) == (
        anonymous_id
    )


def test_new_ids_are_uuid4_and_parse_back() -> None:
    ids = {new_anonymous_id() for _ in range(100)}
    assert len(ids) == 100
    for value in ids:
        assert uuid.UUID(value).version == 4
        assert parse_anonymous_id(f"%22{value}%22") == value


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ajs_anonymous_id=%22x1%22", "%22x1%22"),
        ("a=1; ajs_anonymous_id=x2; b=2", "x2"),
        ("not_ajs_anonymous_id=evil; ajs_anonymous_id=good", "good"),
        ("xajs_anonymous_id=evil", None),
        ("Xajs_anonymous_id=evil", None),
        ("ajs_anonymous_id=first; ajs_anonymous_id=second", "first"),  # the most specific path comes first
        ("xajs_anonymous_id=evil; ajs_anonymous_id=good; ajs_anonymous_id=later", "good"),
        ("ajs_anonymous_id=abc; other=1; third=2", "abc"),
        ("a=1;ajs_anonymous_id=  spaced  ", "spaced"),
        ("ajs_anonymous_id=", ""),
        ("", None),
        (None, None),
    ],
)
def test_cookie_value(header: str | None, expected: str | None) -> None:
    assert cookie_value(header, "ajs_anonymous_id") == expected


@QUICK
@given(st.text(max_size=300), st.text(min_size=1, max_size=20))
def test_cookie_value_never_raises(header: str, name: str) -> None:
    value = cookie_value(header, name)
    assert value is None or (isinstance(value, str) and len(value) <= len(header))


def test_set_cookie_header_attributes() -> None:
    plain = set_cookie_header(cookie_spec("ajs_anonymous_id", "abc", 31536000, None, False))
    assert plain == "ajs_anonymous_id=%22abc%22; Path=/; Max-Age=31536000; SameSite=Lax"
    secure = set_cookie_header(cookie_spec("ajs_anonymous_id", "abc", 10, ".example.com", True))
    assert "Domain=.example.com" in secure and secure.endswith("Secure")
    assert "HttpOnly" not in secure


# ====================================================================== the runtime's identity choice
@pytest.fixture
def local_runtime(store_path: str) -> Iterator[Runtime]:
    rt = Runtime(Settings.from_sources({"local_store": store_path, "flush_interval": 0.05}, environ={}))
    yield rt
    rt.delivery.shutdown(2)


def test_cookie_ids_are_remembered_per_header_and_bounded(local_runtime: Runtime) -> None:
    import segment_middleware.core as core

    def begin(header: str) -> str | None:
        return local_runtime.begin(None, facts(), header, None).anonymous_id

    a = "theme=dark; ajs_anonymous_id=%22aaa%22"
    b = "theme=dark; ajs_anonymous_id=bbb"
    assert [begin(a), begin(b), begin(a), begin(b)] == ["aaa", "bbb", "aaa", "bbb"]
    bad = "ajs_anonymous_id=%22%ZZ"  # remembered as "no id": each request gets a fresh one
    first, second = begin(bad), begin(bad)
    assert first and second and first != second
    for i in range(core._CACHED_HEADERS + 50):
        assert begin(f"ajs_anonymous_id=id{i}") == f"id{i}"
    assert len(local_runtime._ids) <= core._CACHED_HEADERS
    huge = "x=" + "y" * core._CACHED_HEADER_MAX + "; ajs_anonymous_id=zzz"
    assert begin(huge) == "zzz" and huge not in local_runtime._ids


def test_request_tracker_from_begin_is_a_complete_tracker(local_runtime: Runtime) -> None:
    """A tracker from Runtime.begin is what Tracker(...) gives for the request's ids, facts
    and user lookup (a returning visitor: no cookie to set)."""
    resolver = lambda: "u-1"  # noqa: E731
    f = facts()
    made = local_runtime.begin(None, f, "ajs_anonymous_id=%22abc%22", None, user_resolver=resolver)
    reference = Tracker(local_runtime.sink, anonymous_id="abc", facts=f, user_resolver=resolver)
    for name in Tracker.__slots__:
        assert getattr(made, name) == getattr(reference, name), name
    assert made.user_id == "u-1" and made.enabled and not made.new_visitor


def stored(rt: Runtime) -> list[dict[str, Any]]:
    assert rt.delivery.flush(10)
    store = Store(rt.settings.local_store)
    try:
        return [row.message for row in store.events()]
    finally:
        store.close()


def build_context(f: RequestFacts | None, s: Settings) -> dict[str, Any]:
    return request_context(f, s)


def page_properties(f: RequestFacts, s: Settings, status: int | None, title: str | None) -> dict[str, Any]:
    """The automatic page call's properties, as the sender derives them."""
    return _page_properties(request_context(f, s)["page"], f, s, status, title)


def facts(**overrides: Any) -> RequestFacts:
    base: dict[str, Any] = {
        "method": "GET",
        "scheme": "https",
        "host": "shop.example",
        "path": "/cart",
        "query": "",
        "remote_addr": "203.0.113.7",
    }
    base.update(overrides)
    return RequestFacts(**base)


@pytest.mark.parametrize(
    ("cookie", "header", "expected", "new"),
    [
        ("ajs_anonymous_id=%22from-cookie%22", "from-header", "from-cookie", False),
        ("ajs_anonymous_id=from-cookie-raw", None, "from-cookie-raw", False),
        ("ajs_anonymous_id=%22%22", "from-header", "from-header", False),  # invalid cookie: header
        ("ajs_anonymous_id=" + "z" * 200, "%22quoted-header%22", "quoted-header", False),
        ("other=1", "from-header", "from-header", False),
        (None, "bad\x01header", None, True),
        ("ajs_anonymous_id=a%00b", "", None, True),
        (None, None, None, True),
    ],
)
def test_cookie_then_header_then_a_new_id(
    local_runtime: Runtime, cookie: str | None, header: str | None, expected: str | None, new: bool
) -> None:
    tracker = local_runtime.begin(None, facts(), cookie, header)
    assert tracker.enabled and tracker.new_visitor is new
    if expected is not None:
        assert tracker.anonymous_id == expected
    else:
        assert uuid.UUID(tracker.anonymous_id or "").version == 4
    cookie_to_set = local_runtime.end(tracker, 200, "cart")
    if new:
        assert cookie_to_set is not None and cookie_to_set.value == f"%22{tracker.anonymous_id}%22"
        assert cookie_to_set.secure  # https request
    else:
        assert cookie_to_set is None
    (page,) = stored(local_runtime)
    assert page["type"] == "page" and page["anonymousId"] == tracker.anonymous_id
    assert page["name"] == "cart" and page["properties"]["status"] == 200


def test_opted_out_and_excluded_requests_produce_nothing(store_path: str) -> None:
    rt = Runtime(
        Settings.from_sources(
            {"local_store": store_path, "flush_interval": 0.05, "honor_dnt": True}, environ={}
        )
    )
    try:
        for gpc, dnt in (("1", None), (None, "1")):
            tracker = rt.begin(None, facts(), None, None, gpc=gpc, dnt=dnt)
            assert not tracker.enabled
            tracker.track("Ignored")  # dropped silently
            with pytest.raises(ValueError):
                tracker.track("")  # misuse still raises
            assert rt.end(tracker, 200, None) is None
        assert not rt.tracks("/health/live", "GET") and rt.tracks("/cart", "GET")
        assert rt.delivery.flush(5)
        assert Store(store_path).events() == []
    finally:
        rt.delivery.shutdown(2)


# ====================================================================== context
@pytest.mark.parametrize(
    ("remote", "xff", "trusted", "anonymize", "expected"),
    [
        ("203.0.113.7", None, (), False, "203.0.113.7"),
        ("203.0.113.7", "1.2.3.4", (), False, "203.0.113.7"),  # XFF ignored without trusted proxies
        ("203.0.113.7", "1.2.3.4", ("10.0.0.0/8",), False, "203.0.113.7"),  # peer is not a proxy
        ("10.0.0.1", "1.2.3.4", ("10.0.0.0/8",), False, "1.2.3.4"),
        ("10.0.0.1", "1.2.3.4, 10.0.0.2", ("10.0.0.0/8",), False, "1.2.3.4"),
        ("10.0.0.1", "6.6.6.6, 1.2.3.4", ("10.0.0.0/8",), False, "1.2.3.4"),  # spoofed left entry
        ("10.0.0.1", "6.6.6.6,1.2.3.4, 10.0.0.9", ("10.0.0.0/8",), False, "1.2.3.4"),
        ("10.0.0.1", "garbage", ("10.0.0.0/8",), False, "10.0.0.1"),
        ("10.0.0.1", "", ("10.0.0.0/8",), False, "10.0.0.1"),
        ("10.0.0.1", "[2001:db8::1]:443", ("10.0.0.0/8",), False, "2001:db8::1"),
        ("10.0.0.1", "1.2.3.4:5678", ("10.0.0.0/8",), False, "1.2.3.4"),
        ("::1", "2001:db8::5", ("::1",), False, "2001:db8::5"),
        ("203.0.113.7", None, (), True, "203.0.113.0"),
        ("2001:db8:1:2:3:4:5:6", None, (), True, "2001:db8:1::"),
        ("10.0.0.1", "1.2.3.4", ("10.0.0.0/8",), True, "1.2.3.0"),
        (None, "1.2.3.4", ("10.0.0.0/8",), False, None),
        ("not-an-ip", None, ("10.0.0.0/8",), False, None),
    ],
)
def test_client_ip(
    remote: str | None, xff: str | None, trusted: tuple[str, ...], anonymize: bool, expected: str | None
) -> None:
    f = facts(remote_addr=remote, forwarded_for=xff)
    assert client_ip(f.remote_addr, f.forwarded_for, trusted, anonymize) == expected


@QUICK
@given(spoofed=st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=5))
def test_visitor_cannot_spoof_ip_through_a_trusted_proxy(spoofed: list[str]) -> None:
    # The proxy appends the real client (198.51.100.9) to whatever the visitor sent.
    xff = ", ".join([*spoofed, "198.51.100.9"])
    f = facts(remote_addr="10.1.2.3", forwarded_for=xff)
    assert client_ip(f.remote_addr, f.forwarded_for, ("10.0.0.0/8",), False) == "198.51.100.9"
    # And with no trusted proxy, the header is not believed at all.
    assert client_ip(f.remote_addr, f.forwarded_for, (), False) == "10.1.2.3"


def test_context_and_page_properties() -> None:
    s = Settings.from_sources({"include_query_params": True}, environ={})
    f = facts(
        path="/landing",
        query="utm_source=news&utm_medium=email&utm_campaign=Spring+Sale&utm_term=shoes"
        "&utm_content=%F0%9F%91%9F&utm_id=&password=hunter2&x=1&x=2",
        referrer="https://ref.example/p?token=abc&q=ok",
        user_agent="Mozilla/5.0 test",
        accept_language="de-CH,de;q=0.9,en;q=0.5",
    )
    ctx = build_context(f, s)
    assert ctx["ip"] == "203.0.113.7"
    assert ctx["userAgent"] == "Mozilla/5.0 test"
    assert ctx["locale"] == "de-CH"
    assert ctx["library"]["name"] == "segment-middleware"
    assert ctx["campaign"] == {
        "source": "news",
        "medium": "email",
        "name": "Spring Sale",
        "term": "shoes",
        "content": "\U0001f45f",
    }
    page = ctx["page"]
    assert page["path"] == "/landing"
    assert page["url"].startswith("https://shop.example/landing?utm_source=news")
    assert "hunter2" not in page["url"] and "password=%5BREDACTED%5D" in page["search"]
    assert page["referrer"] == "https://ref.example/p?token=%5BREDACTED%5D&q=ok"
    props = page_properties(f, s, 201, "Landing")
    assert props["method"] == "GET" and props["status"] == 201 and props["title"] == "Landing"
    assert props["url"] == page["url"] and props["search"] == page["search"]
    assert props["query"]["password"] == REDACTED
    assert props["query"]["x"] == ["1", "2"]
    assert props["query"]["utm_campaign"] == "Spring Sale"


def test_no_request_context_outside_a_request() -> None:
    ctx = build_context(None, Settings())
    assert set(ctx) == {"library"}


@pytest.mark.parametrize(
    ("key", "redacted"),
    [
        ("token", True),
        ("access_token", True),
        ("Password", True),
        ("user[email]", True),
        ("API-Key", True),
        ("apikey", True),
        ("client.secret", True),
        ("%74oken", True),  # percent-encoded "token"
        ("sessionid", True),
        ("code", True),
        ("tokenizer", False),
        ("monkey", False),
        ("keyboard", False),
        ("page", False),
        ("q", False),
    ],
)
def test_query_redaction_keys(key: str, redacted: bool) -> None:
    search, pairs = redact_query(f"{key}=VALUE42&keep=1", WORDS)
    assert ("VALUE42" not in search) is redacted
    assert pairs[-1] == ("keep", "1") and search.endswith("&keep=1")
    if redacted:
        assert search.startswith(f"{key}=%5BREDACTED%5D")


@pytest.mark.parametrize("key", ["accessToken", "authToken", "userEmail", "resetCode"])
def test_camel_case_sensitive_keys_are_redacted(key: str) -> None:
    search, _ = redact_query(f"{key}=VALUE42", WORDS)
    assert "VALUE42" not in search


_SAFE = st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=8)


@QUICK
@given(
    before=st.lists(st.tuples(_SAFE, _SAFE), max_size=4),
    after=st.lists(st.tuples(_SAFE, _SAFE), max_size=4),
    word=st.sampled_from(["token", "password", "secret", "email", "code", "api_key", "user[email]"]),
)
def test_a_sensitive_value_never_survives_anywhere(
    before: list[tuple[str, str]], after: list[tuple[str, str]], word: str
) -> None:
    secret = "SeKrEt-XYZ"
    query = "&".join(f"{k}={v}" for k, v in [*before, (word, secret), *after])
    s = Settings.from_sources({"include_query_params": True}, environ={})
    f = facts(query=query, referrer=f"https://ref.example/?{query}")
    ctx = build_context(f, s)
    props = page_properties(f, s, 200, None)
    blob = json.dumps([ctx, props])
    assert secret not in blob
    assert [k for k, _ in redact_query(query, WORDS)[1]] == [k for k, _ in [*before, (word, secret), *after]]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-CH,de;q=0.9,en;q=0.5", "de-CH"),
        ("en-US", "en-US"),
        ("fr;q=0.8", "fr"),
        ("  pt-BR , en", "pt-BR"),
        ("zh-Hant-TW", "zh-Hant-TW"),
        ("*", None),
        ("", None),
        (None, None),
        ("<script>", None),
        ("en US", None),
        ("a" * 36, None),
        ("x" * 100_000, None),
    ],
)
def test_locale_is_the_first_tag(header: str | None, expected: str | None) -> None:
    assert locale(header) == expected


@pytest.mark.parametrize("header", ["\xe9\xe9-CH", "\u0661\u0662", "d\xe9"])
def test_locale_is_ascii_only(header: str) -> None:
    assert locale(header) is None


@QUICK
@given(
    path=st.text(max_size=50),
    query=st.text(max_size=200),
    referrer=st.one_of(st.none(), st.text(max_size=100)),
    ua=st.one_of(st.none(), st.text(max_size=50)),
    lang=st.one_of(st.none(), st.text(max_size=50)),
    remote=st.one_of(st.none(), st.text(max_size=20), st.ip_addresses().map(str)),
    xff=st.one_of(st.none(), st.text(max_size=40)),
    trusted=st.booleans(),
    anonymize=st.booleans(),
)
def test_context_never_raises_on_visitor_input(
    path: str,
    query: str,
    referrer: str | None,
    ua: str | None,
    lang: str | None,
    remote: str | None,
    xff: str | None,
    trusted: bool,
    anonymize: bool,
) -> None:
    s = Settings.from_sources(
        {
            "include_query_params": True,
            "anonymize_ip": anonymize,
            "trusted_proxies": ["0.0.0.0/0", "::/0"] if trusted else [],
        },
        environ={},
    )
    f = facts(
        path=path,
        query=query,
        referrer=referrer,
        user_agent=ua,
        accept_language=lang,
        remote_addr=remote,
        forwarded_for=xff,
    )
    ctx = build_context(f, s)
    props = page_properties(f, s, 200, None)
    json.dumps([ctx, props])  # always serializable
    assert ctx["page"]["path"] == path and props["path"] == path


def test_non_utf8_and_huge_values() -> None:
    s = Settings.from_sources({"include_query_params": True}, environ={})
    raw = b"q=\xff\xfe&utm_source=%FF%FE&token=\xc3\x28".decode("latin-1")
    f = facts(
        path=b"/caf\xc3\xa9".decode("latin-1"),
        query=raw,
        user_agent=b"\xff\xfe agent".decode("latin-1"),
        referrer="http://[::1?token=abc",  # not a URL at all
        accept_language=b"\xff".decode("latin-1") + "x" * 10_000,
    )
    ctx = build_context(f, s)
    assert ctx["campaign"]["source"] == "\ufffd\ufffd"  # undecodable escapes become U+FFFD
    assert ctx["page"]["referrer"] == ""
    assert "locale" not in ctx
    props = page_properties(f, s, 200, None)
    assert props["query"]["token"] == REDACTED
    json.dumps([ctx, props])

    huge = "&".join(f"k{i}=v{i}" for i in range(20_000)) + "&password=leak"
    f = facts(query=huge, referrer="https://r.example/?" + huge)
    ctx = build_context(f, s)
    assert "leak" not in ctx["page"]["search"] and "leak" not in ctx["page"]["referrer"]
    assert redact_url("https://r.example/path", WORDS) == "https://r.example/path"
    assert build_context(facts(referrer=None), s)["page"]["referrer"] == ""


def test_context_is_built_once_per_request_and_copied_per_message() -> None:
    s = Settings()
    f = facts(user_agent="ua")
    first = build_context(f, s)
    first["userAgent"] = "changed by one message"
    assert build_context(f, s)["userAgent"] == "ua"


# ====================================================================== tracker
def test_calls_fill_ids_context_and_message_fields(local_runtime: Runtime) -> None:
    t = local_runtime.tracker(user_id="u1", anonymous_id="a1")
    t.track("Signed Up", {"plan": "pro"})
    t.page("Pricing", {"tier": 2}, category="Docs")
    t.screen("Home", {"x": 1})
    t.group(42, {"name": "Acme"})
    t.identify(traits={"email": "x@example.com"})
    msgs = stored(local_runtime)
    assert [m["type"] for m in msgs] == ["track", "page", "screen", "group", "identify"]
    for m in msgs:
        assert m["userId"] == "u1" and m["anonymousId"] == "a1"
        assert m["context"]["library"]["name"] == "segment-middleware"
        assert uuid.UUID(m["messageId"]).version == 4
        assert dt.datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert msgs[0]["event"] == "Signed Up" and msgs[0]["properties"] == {"plan": "pro"}
    assert (msgs[1]["name"], msgs[1]["category"], msgs[1]["properties"]) == ("Pricing", "Docs", {"tier": 2})
    assert msgs[2]["name"] == "Home"
    assert msgs[3]["groupId"] == "42" and msgs[3]["traits"] == {"name": "Acme"}
    assert msgs[4]["traits"] == {"email": "x@example.com"}
    assert len({m["messageId"] for m in msgs}) == 5


def test_identify_switches_the_user_for_later_calls_and_alias_defaults(local_runtime: Runtime) -> None:
    t = local_runtime.tracker(anonymous_id="anon-1")
    t.track("Before Login")
    t.identify("user-9", {"plan": "free"})
    t.track("After Login")
    t.alias("user-10")
    msgs = stored(local_runtime)
    before, identify, after, alias = msgs
    assert "userId" not in before and before["anonymousId"] == "anon-1"
    assert identify["userId"] == "user-9" and identify["anonymousId"] == "anon-1"
    assert after["userId"] == "user-9" and after["anonymousId"] == "anon-1"
    assert t.user_id == "user-9"
    assert alias["type"] == "alias" and alias["userId"] == "user-10" and alias["previousId"] == "anon-1"
    assert "anonymousId" not in alias


def test_request_tracker_shares_the_request_context(local_runtime: Runtime) -> None:
    f = facts(path="/checkout", query="utm_source=ads", user_agent="ua-1", accept_language="en-GB")
    t = local_runtime.begin(
        None,
        f,
        "ajs_anonymous_id=%22visitor%22",
        None,
        user_resolver=lambda: local_runtime.user_lookup(lambda r: 77)(None),
    )
    t.title = "Checkout"
    t.track("Checkout Started", {"value": Decimal("9.90")})
    local_runtime.end(t, 200, "checkout")
    track, page = stored(local_runtime)
    for m in (track, page):
        assert m["anonymousId"] == "visitor"
        assert m["context"]["userAgent"] == "ua-1" and m["context"]["locale"] == "en-GB"
        assert m["context"]["campaign"] == {"source": "ads"}
        assert m["context"]["page"]["path"] == "/checkout"
    assert track["userId"] == page["userId"] == "77"  # always a string
    assert track["properties"] == {"value": 9.9}
    assert page["properties"]["title"] == "Checkout" and page["properties"]["status"] == 200


def test_options_context_integrations_timestamp_message_id(local_runtime: Runtime) -> None:
    t = local_runtime.tracker(user_id="u1")
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    t.track(
        "With Options",
        context={"ip": "1.2.3.4", "library": {"extra": True}},
        integrations={"Mixpanel": False},
        timestamp=when,
        message_id="fixed-id-1",
    )
    (m,) = stored(local_runtime)
    assert m["messageId"] == "fixed-id-1"
    assert m["timestamp"] == "2026-01-02T03:04:05+00:00"
    assert m["integrations"] == {"Mixpanel": False}
    assert m["context"]["ip"] == "1.2.3.4"
    assert m["context"]["library"]["name"] == "segment-middleware" and m["context"]["library"]["extra"]


class Color(enum.Enum):
    RED = "red"


def test_values_are_converted_to_json(local_runtime: Runtime) -> None:
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    t = local_runtime.tracker(user_id="u1")
    t.track(
        "Converted",
        {
            "price": Decimal("19.99"),
            "qty": Decimal("3"),
            "at": dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc),
            "day": dt.date(2026, 1, 1),
            "id": uid,
            "color": Color.RED,
            "tags": {"b", "a"},
            "tuple": (1, 2),
            1: "int key",
            False: "bool key",
        },
    )
    (m,) = stored(local_runtime)
    assert m["properties"] == {
        "price": 19.99,
        "qty": 3,
        "at": "2026-01-01T12:00:00+00:00",
        "day": "2026-01-01",
        "id": str(uid),
        "color": "red",
        "tags": ["a", "b"],
        "tuple": [1, 2],
        "1": "int key",
        "false": "bool key",
    }


def test_unserializable_values_raise_at_the_call_and_queue_nothing(local_runtime: Runtime) -> None:
    t = local_runtime.tracker(user_id="u1")
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda: t.track("E", {"obj": object()}), TypeError, "properties['obj']: object"),
        (lambda: t.track("E", {"nested": {"f": lambda: 1}}), TypeError, "properties['nested']['f']"),
        (lambda: t.track("E", {"n": math.nan}), ValueError, "properties['n']"),
        (lambda: t.track("E", {"d": Decimal("Infinity")}), ValueError, "properties['d']"),
        (lambda: t.track("E", cycle), ValueError, "nested deeper"),
        (lambda: t.track("E", {("tuple", "key"): 1}), TypeError, "keys must be strings"),
        (lambda: t.track("E", ["not", "a", "mapping"]), TypeError, "properties must be a mapping"),
        (lambda: t.identify("u2", {"b": b"bytes"}), TypeError, "traits['b']: bytes"),
        (lambda: t.group("g", {"x": {1, object()}}), TypeError, "traits['x']"),
        (lambda: t.track(""), ValueError, "event must be a non-empty string"),
        (lambda: t.track(None), TypeError, "event must be a non-empty string"),
        (lambda: t.group(None), TypeError, "group_id"),
        (lambda: t.group(""), ValueError, "group_id"),
        (lambda: t.identify(True), TypeError, "user_id"),
        (lambda: t.page(name=""), ValueError, "name"),
        (lambda: t.track("E", timestamp="yesterday"), TypeError, "timestamp must be a datetime"),
        (lambda: t.track("E", bogus=1), TypeError, "unexpected option 'bogus'"),
        (lambda: t.track("E", context=[1]), TypeError, "context must be a mapping"),
    ]
    for call, error, fragment in cases:
        with pytest.raises(error) as info:
            call()
        assert fragment in str(info.value), (fragment, str(info.value))
    assert t.user_id == "u1"  # a failed identify did not switch the user
    assert local_runtime.delivery.stats()["queued"] == 0
    assert stored(local_runtime) == []


def test_a_tracker_needs_some_id(local_runtime: Runtime) -> None:
    t = local_runtime.tracker()
    with pytest.raises(ValueError, match="no userId or anonymousId"):
        t.track("E")
    with pytest.raises(ValueError, match="alias needs previous_id"):
        t.alias("u1")
    with pytest.raises(ValueError):
        local_runtime.tracker(user_id="")
    t.alias("u1", "old-id")  # an explicit previous id is enough for alias
    (m,) = stored(local_runtime)
    assert (m["userId"], m["previousId"]) == ("u1", "old-id")


def test_user_resolver_errors_mean_anonymous(local_runtime: Runtime) -> None:
    def broken() -> str:
        raise RuntimeError("auth backend down")

    t = Tracker(local_runtime.sink, anonymous_id="a1", user_resolver=broken)
    t.track("E")
    (m,) = stored(local_runtime)
    assert "userId" not in m and m["anonymousId"] == "a1"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)


@QUICK
@given(value=_JSON)
def test_jsonable_keeps_json_data_unchanged(value: Any) -> None:
    assert jsonable(value) == value
    assert json.loads(json.dumps(jsonable(value))) == value


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    event=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""),
    props=st.dictionaries(st.text(max_size=8), _JSON, max_size=4),
)
def test_tracked_properties_arrive_in_the_store_unchanged(
    local_runtime: Runtime, event: str, props: dict[str, Any]
) -> None:
    marker = uuid.uuid4().hex
    local_runtime.tracker(user_id=marker).track(event, props)
    assert local_runtime.delivery.flush(10)
    store = Store(local_runtime.settings.local_store)
    try:
        (row,) = store.events(user=marker)
    finally:
        store.close()
    assert row.event == event and row.message["event"] == event
    assert row.message["properties"] == props


def test_tracker_delivers_over_http(receiver: SegmentReceiver, store_path: str) -> None:
    rt = Runtime(
        Settings.from_sources(
            {"write_key": WRITE_KEY, "host": receiver.url, "local_store": store_path, "flush_interval": 0.05},
            environ={},
        )
    )
    try:
        t = rt.tracker(anonymous_id="anon-http")
        t.identify("user-http", {"name": "Ann"})
        t.track("Over HTTP", {"n": 1})
        assert rt.delivery.flush(10)
        identify, track = receiver.wait_for(2)
    finally:
        rt.delivery.shutdown(2)
    assert identify["type"] == "identify" and identify["traits"] == {"name": "Ann"}
    assert track["userId"] == "user-http" and track["anonymousId"] == "anon-http"
    assert track["properties"] == {"n": 1}
    assert rt.delivery.stats()["delivered"] == 2


# ====================================================================== store
def _msg(i: int, **extra: Any) -> Encoded:
    m = {"type": "track", "event": f"E{i}", "userId": f"u{i % 3}", "messageId": f"m-{i}", **extra}
    return Encoded(m, json.dumps(m).encode())


@pytest.fixture
def two_stores(store_path: str) -> Iterator[tuple[Store, Store]]:
    a, b = Store(store_path), Store(store_path)
    yield a, b
    a.close()
    b.close()


def test_store_is_in_wal_mode_and_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "events.sqlite3"
    store = Store(str(path))
    assert store.count() == 0
    store.close()
    assert path.exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_insert_and_list_across_two_connections(two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    assert a.insert([_msg(i) for i in range(250)], LOCAL) == 250  # more than one INSERT chunk
    assert b.insert([_msg(1000, name="P", type="page")], SPOOL, error="HTTP 503") == 1
    assert a.insert([], LOCAL) == 0
    everything = b.events()
    assert len(everything) == 251 and a.count() == b.count() == 251
    assert [r.message_id for r in everything[:3]] == ["m-0", "m-1", "m-2"]
    assert [r.id for r in everything] == sorted(r.id for r in everything)
    last = a.events(kind=SPOOL)
    assert len(last) == 1
    (spooled,) = last
    assert (spooled.type, spooled.event, spooled.error) == ("page", "E1000", "HTTP 503")
    assert spooled.message == json.loads(spooled.body)
    assert len(a.events(user="u0", type="track")) == 84
    assert [r.message_id for r in a.events(after_id=everything[-3].id)] == ["m-249", "m-1000"]
    assert len(a.events(limit=5)) == 5
    assert sum(len(batch) for batch in b.iter_pending(batch=100)) == 251
    assert a.delete_user("u1") == 84 and b.count() == 167  # 83 tracks and the page


def test_claims_are_exclusive_across_connections(two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    a.insert([_msg(i) for i in range(10)], SPOOL)
    a.insert([_msg(100)], LOCAL)
    first = a.claim(4)
    second = b.claim(100)
    assert len(first) == 4 and len(second) == 6  # the local row is not spool
    assert not {r.id for r in first} & {r.id for r in second}
    assert b.claim(100) == [] and a.claim(100, kind="all")[0].kind == LOCAL
    assert len(b.events(pending_only=True)) == 0
    a.release(r.id for r in first)
    again = b.claim(100)
    assert sorted(r.id for r in again) == sorted(r.id for r in first)
    b.mark_replayed(r.id for r in [*second, *again])
    assert all(r.replayed_at and r.replayed_at > 0 for r in a.events(kind=SPOOL))
    a.release_stale_claims()  # a live claimer (this process) and replayed rows stay put
    assert a.claim(100, kind="all") == []


def test_claims_of_a_dead_process_are_released(store_path: str) -> None:
    store = Store(store_path)
    store.insert([_msg(i) for i in range(5)], SPOOL)
    code = "import sys; from segment_middleware.store import Store; print(len(Store(sys.argv[1]).claim(3)))"
    out = subprocess.run(
        [sys.executable, "-c", code, store_path], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "3"
    assert len(store.events(pending_only=True)) == 2
    assert len(store.claim(100)) == 2  # the dead process still holds 3
    store.release_stale_claims()
    assert len(store.claim(100)) == 3
    store.close()


def test_claim_since(store_path: str) -> None:
    store = Store(store_path)
    store.insert([_msg(1)], SPOOL)
    conn = sqlite3.connect(store_path)
    with conn:
        conn.execute("UPDATE events SET stored_at = stored_at - 86400")
    conn.close()
    store.insert([_msg(2)], SPOOL)
    (recent,) = store.claim(10, since=time.time() - 3600)
    assert recent.message_id == "m-2"
    assert len(store.events(since=0)) == 2
    store.close()


def test_concurrent_writers_lose_nothing(store_path: str) -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        store = Store(store_path)
        try:
            for i in range(20):
                store.insert([_msg(n * 1000 + i * 10 + j) for j in range(10)], LOCAL)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    store = Store(store_path)
    ids = [r.message_id for r in store.events()]
    store.close()
    assert len(ids) == 800 and len(set(ids)) == 800


@pytest.mark.parametrize("raw", ["  ", "%22%20%22", "%20", '" "'])
def test_whitespace_only_ids_are_ignored(raw: str) -> None:
    from segment_middleware.identity import parse_anonymous_id as parse

    assert parse(raw) is None


def test_tracker_arguments_are_checked_naming_the_field(local_runtime: Runtime) -> None:
    with pytest.raises(TypeError, match=r"^anonymous_id must be"):
        local_runtime.tracker(anonymous_id=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^user_id must be"):
        local_runtime.tracker(user_id=[1])


def test_settings_built_directly_are_validated_and_normalised(store_path: str) -> None:
    s = Settings(exclude_paths=["/x"], page_methods=["get"], local_store=store_path)  # type: ignore[arg-type]
    assert s.exclude_paths == ("/x",) and s.page_methods == ("GET",)
    runtime = Runtime(s)
    assert not runtime.tracks("/x/y", "GET") and runtime.tracks("/a", "GET")
    assert not runtime.tracks("/a", "POST")
    runtime.delivery.shutdown(1)
    with pytest.raises(SettingsError, match=r"^flush_at: "):
        Settings(flush_at=0)
    with pytest.raises(SettingsError, match=r"^flush_at: "):
        Settings().replace(flush_at=0)


def test_the_settings_page_lists_every_setting() -> None:
    """The table in docs/settings.md and the Settings rows are one list: a new setting needs
    its row; the page names the last check id."""
    readme = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text()
    table = readme.split("| setting | default | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = set()
    for line in table.splitlines()[2:]:
        first_cell = line.split("|")[1]
        documented |= {n for n in re.findall(r"`([A-Z_]+)`", first_cell) if not n.startswith("SEGMENT_")}
    rows = {f.name.upper() for f in dataclasses.fields(Settings)}
    assert documented == rows
    ids = [f.metadata["id"] for f in dataclasses.fields(Settings)]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"segment\.E0\d\d", i) for i in ids)
    assert f"`{ids[-1].split('.')[1]}` `{dataclasses.fields(Settings)[-1].name.upper()}`" in readme


def test_a_request_ends_once_however_often_an_adapter_says_so(local_runtime: Runtime) -> None:
    """The response start and the app's exception may both end a request: one page call."""
    tracker = local_runtime.begin(None, facts(), None, None)
    first = local_runtime.finish(tracker, 200, "cart", None)
    assert first is not None and first.name == "ajs_anonymous_id"  # a new visitor's cookie
    assert local_runtime.finish(tracker, 500, "cart", None) is None
    assert local_runtime.end(tracker, 500, "cart", None) is None
    assert local_runtime.delivery.flush(5)
    pages = [e for e in Store(local_runtime.settings.local_store).events() if e.message["type"] == "page"]
    assert [p.message["properties"]["status"] for p in pages] == [200]


def test_a_calls_integrations_win_over_its_events_and_the_default(tmp_path: Path) -> None:
    from segment_middleware.testing import capture

    events_integrations = {"Order Completed": {"Mixpanel": True, "Amplitude": False}}
    rt = Runtime(
        Settings(
            local_store=str(tmp_path / "s.sqlite3"),
            integrations={"All": False, "Mixpanel": False, "events": events_integrations},
        )
    )
    with capture() as events:
        rt.tracker(user_id=1).track("Order Completed", integrations={"Amplitude": True})
        rt.tracker(user_id=1).track("Other")
        rt.tracker(user_id=1).page("Order Completed")  # a page of that name is not the event
    order, other, page = events
    assert order["integrations"] == {"All": False, "Mixpanel": True, "Amplitude": True}
    assert other["integrations"] == page["integrations"] == {"All": False, "Mixpanel": False}


def test_the_core_imports_without_any_framework_or_optional_library(tmp_path: Path) -> None:
    """README: the core needs only segment-analytics-python and orjson. Every optional
    package is made unimportable in a fresh interpreter, then the core modules import."""
    blocked = ["django", "flask", "flask_login", "starlette", "fastapi", "jinja2", "werkzeug", "asgiref"]
    blocked += ["jsonschema", "yaml", "pytest", "hypothesis", "httpx"]
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "import segment_middleware, segment_middleware.core, segment_middleware.wsgi\n"
        "import segment_middleware.testing, segment_middleware.cli, segment_middleware.ecommerce\n"
        "segment_middleware.tracker(user_id=1).ecommerce.order_completed('o-1')\n"
        "print('ok')"
    )
    env = {**os.environ, "SEGMENT_LOCAL_STORE": str(tmp_path / "events.sqlite3")}
    env.pop("SEGMENT_WRITE_KEY", None)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert (tmp_path / "events.sqlite3").exists()  # the call went to the local store at exit


def test_a_pipeline_that_posts_loads_its_http_modules_when_it_is_built(tmp_path: Path) -> None:
    """The sender's HTTP modules (requests, the SDK) load when a runtime with a write key is
    built (with the app, before a preloading server forks), not on the sender thread at the
    first post, under traffic. Without a key nothing is posted, and they are not loaded."""
    code = (
        "import sys\n"
        "from segment_middleware.core import Runtime\n"
        "from segment_middleware.settings import Settings\n"
        "Runtime(Settings.from_sources({'local_store': sys.argv[1]}, style='kwarg'))\n"
        "print('segment_middleware.http' in sys.modules, 'requests' in sys.modules)\n"
        "posting = {'local_store': sys.argv[1], 'write_key': 'k', 'host': 'http://127.0.0.1:9'}\n"
        "Runtime(Settings.from_sources(posting, style='kwarg'))\n"
        "print('segment_middleware.http' in sys.modules, 'requests' in sys.modules)\n"
    )
    out = _fresh_interpreter(code, tmp_path)
    assert out.split("\n")[:2] == ["False False", "True True"], out


def test_the_first_pipeline_that_posts_collects_once_after_loading_its_http_modules(tmp_path: Path) -> None:
    """Loading requests and the SDK leaves enough long-lived objects to make a full
    collection due within seconds of serving. The first runtime with a write key runs that
    collection itself, at start-up: once per process, and never when the app has turned
    the collector off. (Automatic collections are kept out with a huge threshold, so each
    count is ours alone.)"""
    code = (
        "import gc, sys\n"
        "gc.set_threshold(10**9)\n"
        "if sys.argv[2] == 'off':\n"
        "    gc.disable()\n"
        "from segment_middleware.core import Runtime\n"
        "from segment_middleware.settings import Settings\n"
        "def full(): return gc.get_stats()[2]['collections']\n"
        "posting = {'local_store': sys.argv[1], 'write_key': 'k', 'host': 'http://127.0.0.1:9'}\n"
        "counts = []\n"
        "for _ in range(2):\n"
        "    before = full()\n"
        "    Runtime(Settings.from_sources(posting, style='kwarg'))\n"
        "    counts.append(full() - before)\n"
        "print(*counts, 'segment_middleware.http' in sys.modules)\n"
    )
    seen = {collector: _fresh_interpreter(code, tmp_path, collector).strip() for collector in ("on", "off")}
    assert seen == {"on": "1 0 True", "off": "0 0 True"}, seen


def _fresh_interpreter(code: str, tmp_path: Path, *args: str) -> str:
    """``code``'s output in a new interpreter without SEGMENT_* variables, its first
    argument a store path in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "events.sqlite3"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_recurring_cache_is_bounded_and_keeps_only_short_texts() -> None:
    """The one cache helper: a hit makes no call, memory stays bounded in entries and in
    the length of what it keeps (a tuple key is measured by its first item)."""
    from segment_middleware.context import RECURRING_MAX, RECURRING_TEXT_MAX, Recurring

    calls: list[object] = []

    def upper(key: object) -> str:
        calls.append(key)
        text = key[0] if isinstance(key, tuple) else key
        return str(text).upper()

    cache: Recurring[object, str] = Recurring(upper)
    assert cache["abc"] == "ABC" and cache["abc"] == "ABC"
    assert calls == ["abc"]  # the second read was a plain dict hit
    long_text = "x" * (RECURRING_TEXT_MAX + 1)
    assert cache[long_text] == long_text.upper() and long_text not in cache
    assert cache[(long_text, 1)] == long_text.upper() and (long_text, 1) not in cache
    assert cache[("ab", 1)] == "AB" and ("ab", 1) in cache
    for i in range(RECURRING_MAX * 2):
        assert cache[f"k{i}"] == f"K{i}"
        assert len(cache) <= RECURRING_MAX


def test_a_queued_call_packs_into_plain_tuples_and_back() -> None:
    """``Queued.pack`` / ``unpack`` follow the class's field list (and ``facts_values`` the
    facts'): a field added to either class without them fails here."""
    import inspect

    from segment_middleware.context import facts_values
    from segment_middleware.messages import Queued

    f = facts(path="/p", query="utm_source=x", referrer="https://r.example/", forwarded_for="10.0.0.1")
    fields = [field.name for field in dataclasses.fields(Queued)]
    assert list(inspect.signature(Queued.pack).parameters) == fields
    assert facts_values(f) == tuple(getattr(f, field.name) for field in dataclasses.fields(RequestFacts))
    for item in (
        Queued(None, 1.7e9, f, name="route", anonymous_id="a", user_id="u", status=404, title="T"),
        Queued({"type": "track", "event": "E"}, 1.7e9, None),
    ):
        packed = Queued.pack(**{name: getattr(item, name) for name in fields})
        assert type(packed) is tuple and (packed[2] is None or type(packed[2]) is tuple)
        assert Queued.unpack(packed) == item


def test_a_queued_page_call_is_left_to_reference_counting(local_runtime: Runtime) -> None:
    """The page call as ``Runtime.end`` queues it is a tuple the cyclic collector stops
    tracking once it has looked at it twice (the facts' tuple first), long before the
    oldest generation (a queued object would be promoted there, and start full
    collections: bench/README.md); the same call as an object stays tracked."""
    import gc

    from segment_middleware.messages import Queued

    queued: list[Any] = []
    local_runtime._put = queued.append  # type: ignore[method-assign]
    tracker = local_runtime.begin(None, facts(query="utm_source=x"), "ajs_anonymous_id=%22v%22", None)
    local_runtime.end(tracker, 200, "route")
    (packed,) = queued
    gc.collect()
    gc.collect()
    assert not gc.is_tracked(packed)
    as_object = Queued.unpack(packed)
    gc.collect()
    gc.collect()
    assert gc.is_tracked(as_object)


def test_a_malformed_queue_item_is_counted_failed_not_raised(store_path: str) -> None:
    """``prepare`` unpacks inside its guard: what is not a packed call costs that one
    message (counted, logged), never the batch or the sender."""
    from segment_middleware.ledger import Ledger
    from segment_middleware.messages import Queued, prepare

    ledger = Ledger()
    good = Queued.pack(None, 1.7e9, facts(), name="n", anonymous_id="a", status=200)
    ready = prepare(
        [("not", "a", "call"), good], Settings.from_sources({"local_store": store_path}, environ={}), ledger
    )
    assert [encoded.message["type"] for encoded in ready] == ["page"]
    assert ledger.stats()["failed"] == 1
