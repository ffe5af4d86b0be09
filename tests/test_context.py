"""Context: query redaction, campaign, locale, proxy-aware IP, the page properties, the recurring caches."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from units import QUICK, WORDS, build_context, facts, page_properties

from segment_middleware.context import (
    REDACTED,
    client_ip,
    locale,
    redact_query,
    redact_url,
)
from segment_middleware.settings import Settings


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
