"""A django-debug-toolbar panel: the Segment calls this request made.

    DEBUG_TOOLBAR_PANELS = [..., "segment_middleware.django.panels.SegmentPanel"]

Each call is shown as the JSON Segment would receive (built as the sender builds it, with
the request's context and BEFORE_SEND; its messageId and timestamp are set when it is
sent), with the tracking plan rules it breaks, if a plan is configured. The calls are
delivered as usual. Requires ``django-debug-toolbar`` (not a dependency of this package).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from debug_toolbar.panels import Panel
from django.utils.html import format_html, format_html_join

from ..messages import finish
from ..taps import Watched, watch

__all__ = ["SegmentPanel", "describe"]


def describe(watched: Watched) -> dict[str, Any]:
    """One call for the panel: its type, name, JSON and plan violations (plain data, as the
    toolbar stores panel stats)."""
    item = watched.item
    preview = dataclasses.replace(item, message=copy.deepcopy(item.message))  # finish() fills it in
    settings = watched.settings
    try:  # the plan is checked below, not in finish(): the preview must not log or drop
        message = finish(preview, settings.replace(tracking_plan=None) if settings.plan else settings)
    except Exception as exc:  # a failing hook: say so, never break the page
        return {"type": "?", "name": "", "json": "", "violations": [f"not sent: {type(exc).__name__}"]}
    if message is None:
        return {"type": "?", "name": "", "json": "", "violations": ["dropped by BEFORE_SEND"]}
    message.pop("messageId", None)
    message.pop("timestamp", None)
    plan = settings.plan
    return {
        "type": str(message.get("type")),
        "name": str(message.get("event") or message.get("name") or ""),
        "json": json.dumps(message, indent=2, sort_keys=True, default=str),
        "violations": plan.violations(message) if plan is not None and item.message is not None else [],
    }


class SegmentPanel(Panel):  # type: ignore[misc]
    title = "Segment"
    is_async = False

    @property
    def nav_subtitle(self) -> str:
        count = len(self.get_stats().get("calls", []))
        return f"{count} call{'' if count == 1 else 's'}"

    def process_request(self, request: Any) -> Any:
        with watch() as seen:
            response = super().process_request(request)
        self._seen = seen
        return response

    def generate_stats(self, request: Any, response: Any) -> None:
        self.record_stats({"calls": [describe(w) for w in getattr(self, "_seen", [])]})

    @property
    def content(self) -> str:
        calls = self.get_stats().get("calls", [])
        if not calls:
            return format_html("<p>{}</p>", "No Segment calls in this request.")
        rows = format_html_join(
            "\n",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            (
                (call["type"], call["name"], "; ".join(call["violations"]) or "-", call["json"])
                for call in calls
            ),
        )
        return format_html(
            "<table><thead><tr><th>call</th><th>name</th><th>tracking plan</th><th>JSON</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            rows,
        )
