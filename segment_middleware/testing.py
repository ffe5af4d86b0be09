"""Assert in your own tests what your views send to Segment.

    from segment_middleware.testing import capture

    def test_checkout(client):
        with capture() as events:
            client.post("/checkout/")
        events.assert_sent("track", event="Order Completed", properties={"order_id": "o-1"})

While a capture is active, every runtime in the process (Django, Flask, ASGI, WSGI,
``segment_middleware.tracker()``) builds each message at the call, as the sender would
(context, BEFORE_SEND, the JSON round trip), and hands it to the capture instead of
queueing it: the message is in ``events`` when the call returns, and nothing is sent or
written to the local store. With pytest, the ``segment_events`` fixture does the same for
one test (``segment_middleware.pytest_plugin``, registered when the package is installed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

from . import taps

__all__ = ["CapturedEvents", "capture"]


class CapturedEvents(Sequence[dict[str, Any]]):
    """The messages sent while a capture was active, as Segment would receive them
    (``type``, ``event``/``name``, ``userId``, ``anonymousId``, ``properties``/``traits``,
    ``context``, ``timestamp``, ``messageId``...), oldest first."""

    def __init__(self) -> None:
        self._messages: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- a sequence
    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self._messages[index]

    def __len__(self) -> int:
        return len(self._messages)

    def __repr__(self) -> str:
        return f"<CapturedEvents {_summary(self._messages)}>"

    def append(self, message: dict[str, Any]) -> None:
        self._messages.append(message)

    def clear(self) -> None:
        """Forget what was captured so far (e.g. what a fixture's set-up sent)."""
        self._messages.clear()

    # ---------------------------------------------------------------- by call
    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self._messages if m.get("type") == kind]

    def tracks(self, event: str | None = None) -> list[dict[str, Any]]:
        """Track calls, of one event when ``event`` is given."""
        return [m for m in self.of_type("track") if event is None or m.get("event") == event]

    def pages(self, name: str | None = None) -> list[dict[str, Any]]:
        """Page calls (the automatic one of each request, and the views' own)."""
        return [m for m in self.of_type("page") if name is None or m.get("name") == name]

    def screens(self, name: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.of_type("screen") if name is None or m.get("name") == name]

    def identifies(self, user_id: Any = None) -> list[dict[str, Any]]:
        return [m for m in self.of_type("identify") if user_id is None or m.get("userId") == str(user_id)]

    def groups(self, group_id: Any = None) -> list[dict[str, Any]]:
        return [m for m in self.of_type("group") if group_id is None or m.get("groupId") == str(group_id)]

    def aliases(self) -> list[dict[str, Any]]:
        return self.of_type("alias")

    def assert_sent(self, kind: str | None = None, /, **expected: Any) -> dict[str, Any]:
        """The first message of type ``kind`` whose fields match ``expected``; raises
        ``AssertionError`` listing what was sent when none does.

        Field names are the wire's (``event``, ``name``, ``userId``, ``properties``...).
        A dict matches when it contains the expected keys with matching values (so
        ``properties={"order_id": "o-1"}`` ignores the other properties).
        """
        candidates = self._messages if kind is None else self.of_type(kind)
        for message in candidates:
            if all(key in message and _matches(message[key], value) for key, value in expected.items()):
                return message
        wanted = ", ".join(f"{k}={v!r}" for k, v in expected.items())
        raise AssertionError(
            f"no {kind or 'message'} with {wanted or 'any fields'} was sent; sent: {_summary(self._messages)}"
        )

    def assert_nothing_sent(self) -> None:
        if self._messages:
            raise AssertionError(f"expected no messages; sent: {_summary(self._messages)}")


def _matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return all(key in actual and _matches(actual[key], value) for key, value in expected.items())
    return bool(actual == expected)


def _summary(messages: list[dict[str, Any]]) -> str:
    """``[track 'Order Completed', page 'home']``: types and names, never property values."""
    if not messages:
        return "[]"
    parts = []
    for m in messages:
        label = m.get("event") or m.get("name") or m.get("groupId") or m.get("userId")
        parts.append(f"{m.get('type')} {label!r}" if label is not None else str(m.get("type")))
    return "[" + ", ".join(parts) + "]"


@contextlib.contextmanager
def capture() -> Iterator[CapturedEvents]:
    """Collect every message the process sends while the block runs, instead of sending
    it. Captures nest: the innermost one gets the messages."""
    events = CapturedEvents()
    previous = taps.set_capture(events.append)
    try:
        yield events
    finally:
        taps.set_capture(previous)
