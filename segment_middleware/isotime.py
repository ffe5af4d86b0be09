"""ISO 8601 times read the same on every Python the package supports.

``datetime.fromisoformat`` reads ``2026-12-07T13:40:07.123Z`` (what analytics.js's
``Date.toJSON()`` and Segment's APIs write) from Python 3.11 on, but not on 3.10, which
only takes its own ``isoformat()`` output: no ``Z``, no ``+0000``, fractions of exactly 3
or 6 digits. The common forms are rewritten into that output first, so a time that one
Python accepts is not refused by another.
"""

from __future__ import annotations

import datetime as _dt
import re

__all__ = ["parse_iso"]

_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})"  # date
    r"(?:[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d{1,9}))?)?"  # time, its fraction
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?"  # zone
)


def parse_iso(text: str) -> _dt.datetime:
    """``text`` as an aware datetime (UTC when it names no zone: Segment's rule for a
    timestamp). ValueError when it is not an ISO 8601 date or date-time."""
    found = _ISO.fullmatch(text.strip())
    if found is not None:
        date, clock, fraction, zone = found.groups()
        text = date
        if clock:
            text += "T" + clock
            if fraction:
                text += "." + fraction[:6].ljust(6, "0")  # microseconds: beyond them is cut
        if zone:
            if zone in ("Z", "z"):
                zone = "+00:00"
            elif len(zone) == 3:
                zone += ":00"
            elif ":" not in zone:
                zone = f"{zone[:3]}:{zone[3:]}"
            text += zone
    parsed = _dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_dt.timezone.utc)
