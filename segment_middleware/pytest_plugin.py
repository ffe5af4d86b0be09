"""The ``segment_events`` pytest fixture, registered (entry point ``pytest11``) when the
package is installed.

    def test_signup(client, segment_events):
        client.post("/signup/", {"email": "a@example.com"})
        segment_events.assert_sent("track", event="Signed Up")

Nothing is imported from the package until a test asks for the fixture, so installing
segment-middleware costs other test suites nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import CapturedEvents


@pytest.fixture
def segment_events() -> Iterator[CapturedEvents]:
    """Every message sent during the test, instead of sending it (``testing.capture()``)."""
    from .testing import capture

    with capture() as events:
        yield events
