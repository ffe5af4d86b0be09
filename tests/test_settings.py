"""Settings: sources, validation, normalisation, the check ids and the settings page."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY
from hypothesis import given
from hypothesis import strategies as st
from units import QUICK

from segment_middleware.core import Runtime
from segment_middleware.settings import Settings, SettingsError


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


def test_every_setting_is_documented_under_its_row() -> None:
    """The settings reference (docs/settings.md) is generated from the table: each row's
    documentation is the docstring under it, so a new setting needs one; ids are unique
    and in sequence. (tests/test_docs.py checks the built page.)"""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from docs_reference import setting_docstrings

    docs = setting_docstrings()
    rows = [f.name for f in dataclasses.fields(Settings)]
    assert list(docs) == rows
    assert [name.upper() for name in rows if not docs[name]] == [], "add a docstring under these rows"
    ids = [f.metadata["id"] for f in dataclasses.fields(Settings)]
    assert ids == [f"segment.E{n:03d}" for n in range(1, len(ids) + 1)]
    page = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text()
    assert "\n<!-- generated: settings -->\n" in page


@pytest.mark.parametrize(
    ("settings", "when_queued"),
    [
        ({}, True),
        ({"suppressed_users": {"u1"}}, True),  # a set: a membership test of ours
        ({"before_send": [lambda m: m]}, False),
        ({"suppressed_users": lambda uid: False}, False),
        ({"tracking_plan": "PLAN", "plan_violations": "warn"}, False),
        ({"tracking_plan": "PLAN", "plan_violations": "drop"}, False),
        ({"tracking_plan": "PLAN", "plan_violations": "raise"}, True),  # checked at the call already
    ],
)
def test_messages_are_built_when_queued_unless_app_code_or_a_plan_check_takes_part(
    tmp_path: Any, settings: dict[str, Any], when_queued: bool
) -> None:
    if "tracking_plan" in settings:
        plan = tmp_path / "plan.json"
        plan.write_text('{"events": {}}')
        settings = {**settings, "tracking_plan": str(plan)}
    assert Settings.from_sources(settings, environ={}).builds_when_queued is when_queued
