"""A FastAPI site in first-party mode, for tests/test_browser_first_party.py.

``GET /`` renders ``segment_snippet(first_party=True)`` and, once analytics.js is ready, makes
two browser calls: ``identify("someone-else", {"plan": "pro"})`` (a body claiming to be
someone) and ``track("Button Clicked", {"color": "green"})``; the DOM then records the
anonymousId analytics.js holds (``data-ajs-anonymous-id``) and that both calls were answered
(``data-sent``). ``GET /signin/<id>`` signs the browser in as ``<id>`` (a ``test_user``
cookie stands in for a session). The write key, host, CDN and local store come from the
environment (``SEGMENT_*``); ``TEST_SERVE_JS=1`` turns on SERVE_ANALYTICS_JS,
``TEST_JS_DIR`` sets ANALYTICS_JS_DIR.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from segment_middleware.asgi import SegmentMiddleware, collect_router
from segment_middleware.snippet import segment_snippet

CALLS = (
    "<script>analytics.ready(function(){"
    'analytics.identify("someone-else",{plan:"pro"})'
    '.then(function(){return analytics.track("Button Clicked",{color:"green"})})'
    ".then(function(){var d=document.documentElement;"
    'd.setAttribute("data-ajs-anonymous-id",analytics.user().anonymousId());'
    'd.setAttribute("data-sent","1")})})</script>'
)


class CookieUser(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = conn.cookies.get("test_user")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


app = FastAPI()
app.add_middleware(AuthenticationMiddleware, backend=CookieUser())
app.add_middleware(
    SegmentMiddleware,
    exclude_paths=["/health", "/signin/"],
    flush_interval=0.2,
    serve_analytics_js=os.environ.get("TEST_SERVE_JS") == "1",
    analytics_js_dir=os.environ.get("TEST_JS_DIR") or None,
)


@app.get("/health")
def health() -> Response:
    return PlainTextResponse("ok")


@app.get("/signin/{user}")
def signin(user: str) -> Response:
    response = HTMLResponse('<!doctype html><html><head><link rel="icon" href="data:,"></head></html>')
    response.set_cookie("test_user", user, max_age=3600, path="/")  # outlives this Chromium
    return response


@app.get("/")
def home(request: Request) -> Response:
    head = '<!doctype html><html><head><link rel="icon" href="data:,">'
    return HTMLResponse(f"{head}{segment_snippet(first_party=True)}{CALLS}</head><body>shop</body></html>")


app.include_router(collect_router, prefix="/segment")
