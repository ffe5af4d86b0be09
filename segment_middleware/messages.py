"""Finish a queued message on the sender thread: context, ids, timestamp, before_send.

The request path queues ``(message, facts, timestamp, page)``; ``page`` is
``(status, title)`` for the automatic page call, whose properties are derived from the
facts here rather than in the request.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .context import RequestFacts, build_context, page_properties

__all__ = ["Item", "finalize", "iso_timestamp"]

Item = tuple[dict[str, Any], "RequestFacts | None", float, "tuple[int | None, str | None] | None"]


_second: tuple[int, str] = (-1, "")


def iso_timestamp(ts: float) -> str:
    """ISO 8601 in UTC with milliseconds; the date part is formatted once per second."""
    global _second
    whole = int(ts)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int((ts - whole) * 1000):03d}Z"


def message_id() -> str:
    """A random (version 4) UUID string, without building a ``uuid.UUID`` object."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def finalize(item: Item, settings: Any) -> dict[str, Any] | None:
    """The complete wire message, or None when a before_send hook dropped it."""
    msg, facts, ts, page = item
    if page is not None and facts is not None:
        msg["properties"] = page_properties(facts, settings, page[0], page[1])
    context = build_context(facts, settings)
    own = msg.get("context")
    if own:
        for key, value in own.items():
            base = context.get(key)
            context[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    msg["context"] = context
    if settings.integrations or "integrations" in msg:
        msg["integrations"] = {**settings.integrations, **msg.get("integrations", {})}
    if "timestamp" not in msg:
        msg["timestamp"] = iso_timestamp(ts)
    if "messageId" not in msg:
        msg["messageId"] = message_id()
    result: dict[str, Any] | None = msg
    for hook in settings.before_send:
        result = hook(result)
        if result is None:
            return None
    return result
