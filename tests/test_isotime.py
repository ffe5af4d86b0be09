"""ISO 8601 times are read alike on every supported Python (3.10's fromisoformat takes no
``Z``, no ``+0000`` and only 3- or 6-digit fractions; 3.11's takes them all)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segment_middleware.isotime import parse_iso

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-07T13:40:07.123Z", dt.datetime(2026, 12, 7, 13, 40, 7, 123000, UTC)),  # Date.toJSON()
        ("2026-12-07T13:40:07Z", dt.datetime(2026, 12, 7, 13, 40, 7, tzinfo=UTC)),
        ("2026-12-07t13:40:07z", dt.datetime(2026, 12, 7, 13, 40, 7, tzinfo=UTC)),
        ("2026-12-07T13:40:07.1+0100", dt.datetime(2026, 12, 7, 12, 40, 7, 100000, UTC)),
        ("2026-12-07T13:40:07.123456789-05", dt.datetime(2026, 12, 7, 18, 40, 7, 123456, UTC)),
        ("2026-12-07 13:40:07,5+05:30", dt.datetime(2026, 12, 7, 8, 10, 7, 500000, UTC)),
        ("2026-12-07T13:40", dt.datetime(2026, 12, 7, 13, 40, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-07", dt.datetime(2026, 12, 7, tzinfo=UTC)),
        (" 2026-12-07T13:40:07+00:00 ", dt.datetime(2026, 12, 7, 13, 40, 7, tzinfo=UTC)),
    ],
)
def test_the_forms_browsers_and_apis_write(text: str, expected: dt.datetime) -> None:
    assert parse_iso(text) == expected


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-13-01", "2026-12-07T25:00Z", "2026-12-07T13:40:07+99"]
)
def test_what_is_not_a_time_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso(text)


@given(
    when=st.datetimes(
        min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    offset_minutes=st.integers(-14 * 60, 14 * 60),
)
def test_every_rendering_of_an_instant_reads_as_that_instant(when: dt.datetime, offset_minutes: int) -> None:
    local = when.astimezone(dt.timezone(dt.timedelta(minutes=offset_minutes)))
    exact = local.isoformat()
    sign, hours, minutes = exact[-6], exact[-5:-3], exact[-2:]
    assert parse_iso(exact) == when
    assert parse_iso(exact[:-6] + sign + hours + minutes) == when  # +HHMM
    assert parse_iso(when.isoformat().replace("+00:00", "Z")) == when
    millis = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # Date.toJSON()
    assert parse_iso(millis) == when.replace(microsecond=when.microsecond // 1000 * 1000)
