"""Visitor text made safe to copy into a message: capped in size, without control characters.

Everything a request hands us (headers, path, query string) is chosen by whoever sent it.
Copied as is, a 40 KB ``User-Agent`` pushes the page call over Segment's 32 KB limit (the
call is then dropped), and a CR/LF or NUL in a header travels into every warehouse and log
that reads the event. So, when a message is built, every visitor-chosen fact is cut to a
byte budget and stripped of control characters (C0, DEL, C1) and lone surrogates (which
UTF-8 cannot carry); the usual short printable ASCII value costs two C-speed checks.

The budgets are in UTF-8 bytes and chosen so that a page call whose every fact is at its
cap, with every byte escaped by JSON, still fits in 32 KB (``tests/test_scrub.py`` holds
them to that): the path appears five times in a page call (``name``, ``path`` and ``url``
in both ``properties`` and ``context.page``), the query string about six (the URLs, the
searches, ``properties.query`` and ``context.campaign``), the referrer twice.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["CAPS", "clean_forwarded_for", "clean_text", "printable", "printable_ascii"]

#: The most UTF-8 bytes kept of each fact copied into messages.
CAPS: Final = {
    "method": 32,
    "host": 256,
    "path": 1024,
    "query": 1024,
    "referrer": 1024,
    "user_agent": 512,
    "accept_language": 256,  # only its first tag is sent (35 characters at most)
    "forwarded_for": 1024,  # only parsed, never sent: bounds the walk through its hops
}

# C0 controls, DEL, C1 controls and lone surrogates. Tab, CR and LF are controls too.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


_C0_AND_DEL = bytes(range(0x20)) + b"\x7f"  # ASCII's only unprintable characters


def printable_ascii(value: str) -> bool:
    """``value.isascii() and value.isprintable()``, without the Unicode tables that
    ``isprintable`` looks each character up in: an ASCII string's bytes are its characters,
    and its only unprintable ones are C0 and DEL, which one ``bytes.translate`` counts.
    ``tests/test_scrub.py`` holds the two to each other."""
    if not value.isascii():
        return False
    data = value.encode("ascii")
    return len(data.translate(None, _C0_AND_DEL)) == len(data)


def clean_text(value: str, limit: int) -> str:
    """``value`` without control characters and lone surrogates, cut to at most ``limit``
    UTF-8 bytes at a character boundary. The usual value (short printable ASCII) is
    returned as it is, after two C-speed checks."""
    if len(value) <= limit and printable_ascii(value):
        return value
    value = _CONTROL.sub("", value)
    if len(value) * 4 <= limit:
        return value
    data = value.encode("utf-8")
    if len(data) <= limit:
        return value
    return data[:limit].decode("utf-8", "ignore")  # "ignore": a character cut in two goes


def printable(value: str) -> str:
    """``value`` without control characters and lone surrogates (a decoded query value:
    ``%0A`` is a line feed once decoded)."""
    return value if value.isprintable() else _CONTROL.sub("", value)


def clean_forwarded_for(value: str, limit: int = CAPS["forwarded_for"]) -> str:
    """X-Forwarded-For cut from the left: ``client_ip`` walks it from the right (the hops
    our trusted proxies appended), so those are the ones kept; the hop cut in two at the
    new left end is dropped whole, as a part of an address may read as another address."""
    value = _CONTROL.sub("", value) if not value.isprintable() else value
    if len(value) <= limit:
        return value
    return value[-limit:].partition(",")[2]
