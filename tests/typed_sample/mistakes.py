"""Deliberate mistakes: mypy must report each marked line with the marked error code.

tests/test_typing.py reads the marks (a comment "error:" and the code in brackets) and holds
mypy's report to them: no mark unreported, no error unmarked.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from fastapi import FastAPI
from flask import Flask

import segment_middleware
from segment_middleware.asgi import SegmentMiddleware
from segment_middleware.django import TrackedHttpRequest
from segment_middleware.flask import Segment, tracker
from segment_middleware.wsgi import SegmentWSGIMiddleware

app = FastAPI()
app.add_middleware(SegmentMiddleware, write_kye="k")  # error: [call-arg]
app.add_middleware(SegmentMiddleware, write_key=1)  # error: [arg-type]
SegmentMiddleware(app, exclude_path=["/admin"])  # error: [call-arg]
SegmentMiddleware(app, flush_at="10")  # error: [arg-type]
Segment(Flask(__name__), honor_gpc="yes")  # error: [arg-type]
SegmentWSGIMiddleware(Flask(__name__), spool_max_mb="512")  # error: [arg-type]
segment_middleware.configure(plan_violations="ignore")  # error: [arg-type]


def view(request: TrackedHttpRequest) -> HttpResponse:
    request.segment.track(1)  # error: [arg-type]
    request.segment.track("Signed Up", timestamp="2024-01-01")  # error: [arg-type]
    request.segment.track("Signed Up", message="hello")  # error: [call-arg]
    request.segment.identify(user_id=4.2)  # error: [arg-type]
    tracker().group(None)  # error: [arg-type]
    return HttpResponse()


def untyped_view(request: HttpRequest) -> HttpResponse:
    request.segment.track("Signed In")  # error: [attr-defined]
    return HttpResponse()
