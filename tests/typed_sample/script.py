"""Outside a request: ``configure()`` and ``tracker()``; a WSGI app; every tracker call."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from typing_extensions import assert_type

import segment_middleware
from segment_middleware import Tracker
from segment_middleware.wsgi import SegmentWSGIMiddleware

segment_middleware.configure(local_store="/tmp/events.sqlite3", flush_at=10, spool_max_mb=64)

t = segment_middleware.tracker(user_id="42")
assert_type(t, Tracker)
when = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
t.track("Invoice Paid", {"amount": 10}, message_id="invoice-1", timestamp=when)
t.identify("42", {"plan": "pro"}, context={"ip": "0.0.0.0"})
t.identify(traits={"email_opt_in": False})
t.page("Pricing", {"plan": "pro"}, category="Docs", integrations={"All": False, "Mixpanel": True})
t.screen("Settings")
t.group(7, {"name": "Acme"})
t.alias("42", previous_id="anon-1", timestamp=None)
current = segment_middleware.current()
if current is not None:
    current.track("In A Request")
segment_middleware.flush(timeout=5)


def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


wsgi = SegmentWSGIMiddleware(inner, user_id=lambda environ: environ.get("REMOTE_USER"), flush_interval=0.5)
wsgi_by_position = SegmentWSGIMiddleware(inner, "myproject.auth.user_id")
