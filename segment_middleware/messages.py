"""Finish a queued message on the sender thread: context, ids, timestamp, before_send.

The request path queues ``(message, facts, timestamp, page)``; ``page`` is
``(status, title)`` for the automatic page call, whose properties are derived from the
facts here rather than in the request.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any

from .context import RequestFacts, build_context, page_properties

__all__ = ["Item", "finalize", "iso_timestamp"]

Item = tuple[dict[str, Any], "RequestFacts | None", float, "tuple[int | None, str | None] | None"]


def iso_timestamp(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).isoformat(timespec="milliseconds")


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
        msg["messageId"] = str(uuid.uuid4())
    result: dict[str, Any] | None = msg
    for hook in settings.before_send:
        result = hook(result)
        if result is None:
            return None
    return result
