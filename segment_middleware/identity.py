"""The anonymous id: read it the way analytics.js writes it, write it the way both read it.

analytics.js classic stores ``ajs_anonymous_id`` as a JSON string, URL-encoded
(``%22<id>%22``); analytics-next stores the raw id. We accept both, and write the quoted
form, which both libraries read back as the same id. Everything here is on the request
path, so it works on the raw ``Cookie`` header with ``str.find`` instead of a full cookie
parse, and never raises on visitor input.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from .ids import random_id

__all__ = ["CookieSpec", "cookie_value", "new_anonymous_id", "parse_anonymous_id", "set_cookie_header"]

MAX_ID_LENGTH = 100
# The longest wire form of a valid id: each character percent-encoded as up to four UTF-8
# bytes, inside %22 quotes. Longer values are refused before any decoding.
MAX_RAW_LENGTH = 12 * MAX_ID_LENGTH + 6


def cookie_value(header: str | None, name: str) -> str | None:
    """The raw value of cookie ``name`` in a ``Cookie`` header, or None.

    A full parse (``http.cookies``) costs several microseconds per request and chokes on
    cookies other sites set badly; we only need one value.
    """
    if not header:
        return None
    needle = name + "="
    start = header.find(needle)
    while start != -1:
        if start == 0 or header[start - 1] in "; \t,":
            begin = start + len(needle)
            end = header.find(";", begin)
            return (header[begin:] if end == -1 else header[begin:end]).strip()
        start = header.find(needle, start + 1)
    return None


def parse_anonymous_id(raw: str | None) -> str | None:
    """A valid id from a cookie or header value in any analytics.js form, else None."""
    if not raw or len(raw) > MAX_RAW_LENGTH or not raw.isascii():
        return None  # cookie and header values are ASCII on the wire; anything else is mangled
    value = raw
    if value.startswith("%22") and value.endswith("%22") and "%" not in value[3:-3]:
        value = value[3:-3]  # the classic form we write ourselves: skip the general decoder
        if not value or '"' in value or "\\" in value:
            return None
    elif "%" in value:
        try:
            value = unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
        if "\\" in value:  # a JSON escape inside the quotes: not an id analytics.js makes
            return None
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable() or '"' in value:
        return None
    if value.isspace():  # "%20" or "  ": nothing to stitch a profile on
        return None
    return value


def new_anonymous_id() -> str:
    """A new visitor's id: a random UUID, as analytics.js makes one."""
    return random_id()


class CookieSpec(NamedTuple):
    """The cookie to set; adapters translate it to their framework's response API."""

    name: str
    value: str  # already in its wire form: %22<id>%22
    max_age: int
    domain: str | None
    secure: bool


def cookie_spec(name: str, anonymous_id: str, max_age: int, domain: str | None, secure: bool) -> CookieSpec:
    """The cookie for ``anonymous_id``. The id is percent-encoded inside the quotes (a UUID
    is unchanged): an id an app gave ``reset()`` can hold ``;``, ``,``, spaces or CR/LF,
    which in a ``Set-Cookie`` value would add attributes or headers. analytics.js and
    :func:`parse_anonymous_id` decode it back to the same id."""
    return CookieSpec(name, f"%22{quote(anonymous_id, safe='')}%22", max_age, domain, secure)


def set_cookie_header(spec: CookieSpec) -> str:
    """The ``Set-Cookie`` header value, for adapters that write raw headers (ASGI, WSGI).

    Not HttpOnly: analytics.js must read it. SameSite=Lax: sent on top-level navigation.
    """
    parts = [f"{spec.name}={spec.value}", "Path=/", f"Max-Age={spec.max_age}", "SameSite=Lax"]
    if spec.domain:
        parts.append(f"Domain={spec.domain}")
    if spec.secure:
        parts.append("Secure")
    return "; ".join(parts)
