"""Identity: the anonymousId cookie and header forms, new ids, the cookie we set."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from units import QUICK

from segment_middleware.identity import (
    MAX_ID_LENGTH,
    cookie_spec,
    cookie_value,
    new_anonymous_id,
    parse_anonymous_id,
    set_cookie_header,
)


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


@pytest.mark.parametrize("raw", ["  ", "%22%20%22", "%20", '" "'])
def test_whitespace_only_ids_are_ignored(raw: str) -> None:
    from segment_middleware.identity import parse_anonymous_id as parse

    assert parse(raw) is None
