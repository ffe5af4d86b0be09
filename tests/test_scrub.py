"""Visitor text copied into messages (``scrub``) and the cookie we write (``identity``).

Every header value, the path and the query string are capped and stripped of control
characters before they reach a message; the budgets keep a page call whose every fact is
at its cap under Segment's 32 KB. The ``Set-Cookie`` we write carries the anonymousId
percent-encoded, so no id (an app's ``reset()`` argument included) can add attributes or
headers.
"""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie

import pytest
from hypothesis import given
from hypothesis import strategies as st
from units import QUICK

from segment_middleware.context import RequestFacts, clean_facts, nothing_to_clean
from segment_middleware.identity import cookie_spec, parse_anonymous_id, set_cookie_header
from segment_middleware.messages import MAX_MESSAGE_BYTES, Queued, encode, finish
from segment_middleware.scrub import CAPS, clean_forwarded_for, clean_text, printable_ascii
from segment_middleware.settings import Settings, SettingsError

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
any_text = st.text(st.characters(codec=None, categories=None), max_size=3000)


@QUICK
@given(any_text, st.integers(0, 2048))
def test_clean_text_is_capped_printable_and_a_prefix(value: str, limit: int) -> None:
    cleaned = clean_text(value, limit)
    assert len(cleaned.encode("utf-8")) <= limit
    assert not CONTROL.search(cleaned)
    assert CONTROL.sub("", value).startswith(cleaned)
    assert clean_text(cleaned, limit) == cleaned


@QUICK
@given(st.text(st.characters(max_codepoint=0x7F), max_size=300) | any_text)
def test_printable_ascii_is_the_two_str_checks(value: str) -> None:
    """``printable_ascii`` is ``isascii() and isprintable()``, for every ASCII character
    on its own and any text."""
    assert printable_ascii(value) == (value.isascii() and value.isprintable())
    for code in range(0x80):
        char = chr(code)
        assert printable_ascii(char) == char.isprintable()
        assert printable_ascii("ok " + char + " ok") == char.isprintable()


def test_clean_text_keeps_usual_values_as_they_are() -> None:
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    assert clean_text(agent, CAPS["user_agent"]) is agent
    assert clean_text("/café/ü", CAPS["path"]) == "/café/ü"
    assert clean_text("a\r\nSet-Cookie: x=1\x00", 100) == "aSet-Cookie: x=1"
    assert clean_text("é" * 10, 5) == "éé"  # a character cut in two is left out whole


def test_forwarded_for_keeps_the_right_end() -> None:
    """client_ip walks X-Forwarded-For from the right: the trusted hops must stay, and the
    hop cut in two at the left goes whole (a part of 10.1.2.3 reads as 0.1.2.3)."""
    hops = ", ".join(f"10.1.{i // 250}.{i % 250}" for i in range(400)) + ", 198.51.100.7"
    cleaned = clean_forwarded_for(hops)
    assert len(cleaned) <= CAPS["forwarded_for"]
    assert cleaned.endswith(", 198.51.100.7")
    assert hops.endswith(cleaned)
    assert cleaned.split(",")[0].strip() in hops.split(", ")
    assert clean_forwarded_for("1.2.3.4\r\n, 5.6.7.8") == "1.2.3.4, 5.6.7.8"


def _worst_page(**settings: object) -> bytes:
    """A page call with every visitor-chosen fact at its cap, in the characters JSON
    escapes (each byte doubles), with INCLUDE_QUERY_PARAMS on."""
    q = '"' * 2000
    facts = RequestFacts(
        method=q,
        scheme="https",
        host=q,
        path="/" + q,
        query="utm_source=" + q + "&utm_campaign=" + q,
        referrer="https://r.example/" + q,
        user_agent=q,
        accept_language=q,
        remote_addr="203.0.113.7",
        forwarded_for=q,
    )
    s = Settings(include_query_params=True, **settings)  # type: ignore[arg-type]
    item = Queued.unpack(Queued.pack(None, time.time(), facts, name=None, anonymous_id="a" * 100, status=200))
    item.name = facts.path
    msg = finish(item, s)
    assert msg is not None
    return encode(msg)


def test_a_page_call_at_every_cap_fits_segments_limit() -> None:
    body = _worst_page()
    assert len(body) <= MAX_MESSAGE_BYTES, len(body)
    assert b'"query"' in body and b'"campaign"' in body  # the worst case was the one built
    # With the caps off, the same request makes a message Segment refuses.
    facts = RequestFacts("GET", "https", "h", "/" + '"' * 20_000)
    assert clean_facts(facts).path != facts.path


def test_facts_without_anything_to_clean_are_the_same_object() -> None:
    facts = RequestFacts(
        "GET", "https", "shop.example", "/cart", "a=1", "https://r/", "UA", "en", "1.2.3.4", "5.6.7.8"
    )
    assert clean_facts(facts) is facts


FACT_NAMES = ("method", "host", "path", "query", "referrer", "user_agent", "accept_language", "forwarded_for")
usual_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@st.composite
def facts_with_one_odd(draw: st.DrawFn) -> RequestFacts:
    """Facts as browsers send them (short printable ASCII, or absent), but one: ASCII at
    its cap or one past it, printable text within it in characters but not in UTF-8 bytes,
    or any text at all."""
    values = {
        name: draw(usual_text if name in ("method", "host", "path", "query") else st.none() | usual_text)
        for name in FACT_NAMES
    }
    odd = draw(st.sampled_from(FACT_NAMES))
    cap = CAPS[odd]
    values[odd] = draw(st.sampled_from(["a" * cap, "a" * (cap + 1), "é" * (cap // 2 + 1)]) | any_text)
    return RequestFacts(scheme="https", remote_addr="203.0.113.7", **values)


@QUICK
@given(facts_with_one_odd())
def test_the_usual_facts_check_agrees_with_cleaning_each_fact(facts: RequestFacts) -> None:
    """``nothing_to_clean`` (clean_facts' one-string check) is only a shortcut: when it says
    so, each fact's own cleaning returns it as it is; either way clean_facts gives what
    cleaning each fact gives."""
    expected = {
        name: None if value is None else clean(value, CAPS[name])
        for name in FACT_NAMES
        for value in [getattr(facts, name)]
        for clean in [clean_forwarded_for if name == "forwarded_for" else clean_text]
    }
    if nothing_to_clean(facts):
        assert all(expected[name] is getattr(facts, name) for name in expected)
    cleaned = clean_facts(facts)
    assert {name: getattr(cleaned, name) for name in expected} == expected


def test_the_usual_browser_request_takes_the_shortcut() -> None:
    facts = RequestFacts(
        "GET",
        "https",
        "shop.example.com",
        "/products/42/",
        "utm_source=newsletter&utm_medium=email",
        "https://www.google.com/search?q=shoes",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "en-US,en;q=0.9",
        "127.0.0.1",
        None,
    )
    assert nothing_to_clean(facts)
    assert not nothing_to_clean(RequestFacts("GET", "https", "h", "/" + "a" * CAPS["path"]))
    long_agent = "a" * (CAPS["user_agent"] + 1)
    assert not nothing_to_clean(RequestFacts("GET", "https", "h", "/", user_agent=long_agent))


# ------------------------------------------------------------------------ the cookie
COOKIE_OCTETS = re.compile(r"^[!#$%&'()*+\-./0-9:<=>?@A-Z\[\]^_`a-z{|}~]*$")  # RFC 6265 cookie-octet


@QUICK
@given(st.text(max_size=200))
def test_the_cookie_value_never_leaves_its_attribute(anonymous_id: str) -> None:
    """Whatever id the cookie carries (an app's reset() argument), its value is RFC 6265
    cookie-octets only: no ';' (a new attribute), ',' or space, CR/LF (a new header)."""
    spec = cookie_spec("ajs_anonymous_id", anonymous_id, 60, ".example.com", True)
    assert COOKIE_OCTETS.match(spec.value)
    header = set_cookie_header(spec)
    assert header.split("; ")[1:] == ["Path=/", "Max-Age=60", "SameSite=Lax", "Domain=.example.com", "Secure"]
    # A valid id reads back as itself (but a backslash, which the JSON form would read as
    # an escape: such an id is refused in the quoted form, as before any encoding).
    if parse_anonymous_id(anonymous_id) == anonymous_id and "\\" not in anonymous_id:
        assert parse_anonymous_id(spec.value) == anonymous_id
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        assert parse_anonymous_id(jar["ajs_anonymous_id"].value) == anonymous_id


def test_a_uuid_cookie_keeps_its_classic_form() -> None:
    assert cookie_spec("c", "0f8f-ab", 1, None, False).value == "%220f8f-ab%22"


@pytest.mark.parametrize("domain", ["x.com; Secure", "x.com\r\nSet-Cookie: a=b", "a b", "x,y"])
def test_a_cookie_domain_that_would_add_attributes_is_refused(domain: str) -> None:
    with pytest.raises(SettingsError, match="cookie_domain"):
        Settings(cookie_domain=domain)
