"""A real browser and the server agree on one anonymousId (SPEC 3 and 5).

Chromium (headless) loads example_flask under gunicorn; the page runs the real analytics.js
(``@segment/analytics-next`` from npm, installed by ``scripts/browser-deps``), served with
its settings by a local stand-in for Segment's CDN; the browser's calls and the server's
batches both go to the receiver. Nothing leaves 127.0.0.1: Chromium's resolver maps every
other host to NOTFOUND, and its network log is checked for any request elsewhere.

Four visitors:

(a) new to the site: the server makes the id and sets the cookie; analytics.js adopts it;
(b) analytics.js made the id first (a page elsewhere on the host): the server adopts it;
(c) an analytics.js classic cookie (``%22<id>%22``): both read the same id from it;
(d) the cookie changed after analytics.js stored an older id in localStorage: the cookie wins.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver
from servers import ROOT, Server, gunicorn

from segment_middleware.settings import Settings
from segment_middleware.snippet import render_snippet

PACKAGE = ROOT / "tests" / "browser" / "node_modules" / "@segment" / "analytics-next"
UMD = PACKAGE / "dist" / "umd"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

_missing = [
    what
    for what, present in (
        ("chromium on PATH", CHROMIUM is not None),
        ("@segment/analytics-next in tests/browser/node_modules", (UMD / "standalone.js").is_file()),
    )
    if not present
]


@pytest.fixture(autouse=True)
def _browser_deps() -> None:
    """Skip on a developer's machine without a browser; under CI (``CI=true``) that is an
    error, so the interop test can never go silently unrun where it is expected to run."""
    if not _missing:
        return
    message = f"needs {' and '.join(_missing)}: run scripts/browser-deps"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI runs the browser test, but it {message}", pytrace=False)
    pytest.skip(message)


#: Writes the browser's anonymousId into the DOM once analytics.js is ready (as base.html does).
SHOW_ID = (
    "<script>window.analytics&&analytics.ready&&analytics.ready(function(){"
    'document.documentElement.setAttribute("data-ajs-anonymous-id",analytics.user().anonymousId())'
    "})</script>"
)
#: Test pages ask for no /favicon.ico.
HEAD = '<!doctype html><html><head><link rel="icon" href="data:,">'
DOM_ID = re.compile(r'<html[^>]*\sdata-ajs-anonymous-id="([^"]*)"')
DOM_STORES = re.compile(r'<html[^>]*\sdata-ajs-stores="([^"]*)"')


# ---------------------------------------------------------------------- the local "CDN"


class Cdn(ThreadingHTTPServer):
    """Segment's CDN on 127.0.0.1: the analytics.js bundle, its chunks, the source settings.

    It also serves the test's own pages (``pages``), so that a page on another port of the
    same host can run analytics.js or set a cookie before the shop is visited. Every
    request is logged as ``(path, status)``.
    """

    daemon_threads = True

    def __init__(self, receiver: SegmentReceiver) -> None:
        self.receiver = receiver
        self.pages: dict[str, str] = {}
        self.log: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _CdnHandler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def served(self) -> list[str]:
        with self.lock:
            return [path for path, status in self.log if status == 200]

    def source_settings(self) -> dict[str, Any]:
        """``/v1/projects/<key>/settings`` for a source whose only destination is Segment.

        What analytics-next 1.84 reads of it (dist/cjs/browser/index.js, plugins/segmentio):
        ``integrations["Segment.io"]`` ``apiKey`` (the body's ``writeKey`` and Basic auth),
        ``apiHost`` and ``protocol`` (it posts to ``<protocol>://<apiHost>/<t|p|i|g|a|s>``);
        one integration only, so no destination bundles are loaded; ``metrics.sampleRate`` 0
        keeps its telemetry (``/m``) quiet; the rest are switched off.
        """
        return {
            "integrations": {
                "Segment.io": {
                    "apiKey": WRITE_KEY,
                    "apiHost": f"127.0.0.1:{self.receiver.port}/v1",
                    "protocol": "http",
                }
            },
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "legacyVideoPluginsEnabled": False,
            "remotePlugins": [],
            "metrics": {"sampleRate": 0},
        }


class _CdnHandler(BaseHTTPRequestHandler):
    server: Cdn

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        status, kind, body = self._answer(path)
        with self.server.lock:
            self.server.log.append((path, status))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Access-Control-Allow-Origin", "*")  # as cdn.segment.com: settings are fetched
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, path: str) -> tuple[int, str, bytes]:
        js = "application/javascript"
        if path == f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js":
            return 200, js, (UMD / "standalone.js").read_bytes()
        if path == f"/v1/projects/{WRITE_KEY}/settings":
            return 200, "application/json", json.dumps(self.server.source_settings()).encode()
        chunk = path.removeprefix("/analytics-next/bundles/")
        if chunk != path and "/" not in chunk and (UMD / chunk).is_file():
            return 200, js, (UMD / chunk).read_bytes()
        if path in self.server.pages:
            return 200, "text/html; charset=utf-8", self.server.pages[path].encode()
        return 404, "text/plain", b"not found"


# ---------------------------------------------------------------------- the browser


@dataclass
class Request:
    """One request in Chromium's network log; ``net_error`` 0 when it was answered."""

    url: str
    initiator: str
    kind: str
    net_error: int = 0
    response_headers: list[str] = field(default_factory=list)

    @property
    def local(self) -> bool:
        return urlsplit(self.url).hostname == "127.0.0.1"

    @property
    def chromiums_own(self) -> bool:
        """Chromium's background traffic (update checks, ...): no page started it."""
        return self.initiator == "not an origin" and self.kind == "other"


@dataclass
class Load:
    """One page load: the DOM after analytics.js settled, and every request Chromium made."""

    url: str
    dom: str
    requests: list[Request]

    @property
    def anonymous_id(self) -> str:
        match = DOM_ID.search(self.dom)
        assert match, f"analytics.js never became ready; DOM:\n{self.dom[:3000]}"
        return match.group(1)

    @property
    def stores(self) -> Any:
        """The storage order analytics.js runs with (example_flask's base.html shows it)."""
        match = DOM_STORES.search(self.dom)
        assert match, f"analytics.js never became ready; DOM:\n{self.dom[:3000]}"
        return json.loads(html.unescape(match.group(1)))

    def set_cookies(self) -> list[str]:
        """The Set-Cookie headers of the page itself."""
        (page,) = [r for r in self.requests if r.url == self.url]
        headers = page.response_headers
        return [h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("set-cookie:")]

    def check_only_local(self) -> None:
        """Every request of the page went to 127.0.0.1; Chromium's own ones found no DNS."""
        assert any(r.url == self.url and r.net_error == 0 for r in self.requests), self.requests
        web = [r for r in self.requests if urlsplit(r.url).scheme in ("http", "https", "ws", "wss")]
        away = [r for r in web if not r.local]
        from_pages = [r.url for r in away if not r.chromiums_own]
        assert from_pages == [], f"the page sent requests off 127.0.0.1: {from_pages}"
        reached = [r.url for r in away if r.net_error != NAME_NOT_RESOLVED]
        assert reached == [], f"Chromium reached hosts other than 127.0.0.1: {reached}"


NAME_NOT_RESOLVED = -105


def browse(profile: Path, url: str, tmp: Path) -> Load:
    """Load ``url`` once in headless Chromium (the profile keeps cookies and localStorage)."""
    assert CHROMIUM is not None
    netlog = tmp / f"netlog-{uuid.uuid4().hex}.json"
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--log-net-log={netlog}",
        "--net-log-capture-mode=IncludeSensitive",  # keeps Set-Cookie headers in the log
        "--dump-dom",
        "--virtual-time-budget=8000",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=45)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return Load(url, done.stdout, _read_netlog(netlog))


def _read_netlog(path: Path) -> list[Request]:
    """Every request in a Chromium network log, with its response headers and outcome."""
    text = path.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short still has its events; close the JSON
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    types = log["constants"]["logEventTypes"]
    start, read_headers = types["URL_REQUEST_START_JOB"], types["HTTP_TRANSACTION_READ_RESPONSE_HEADERS"]
    by_source: dict[int, Request] = {}
    requests: list[Request] = []
    for event in log["events"]:
        params = event.get("params") or {}
        request = by_source.get(event["source"]["id"])
        if event["type"] == start and "url" in params:
            request = Request(params["url"], params.get("initiator", ""), params.get("request_type", ""))
            by_source[event["source"]["id"]] = request
            requests.append(request)
        elif request is not None and event["type"] == read_headers:
            request.response_headers.extend(params.get("headers", []))
        elif request is not None and params.get("net_error"):
            request.net_error = params["net_error"]
    return requests


# ---------------------------------------------------------------------- the servers


@dataclass
class Stack:
    receiver: SegmentReceiver
    cdn: Cdn
    shop: Server
    tmp: Path

    def shop_url(self, label: str) -> str:
        return f"http://127.0.0.1:{self.shop.port}/?n={label}"

    def profile(self, name: str) -> Path:
        return self.tmp / f"profile-{name}"

    def snippet_page(self) -> str:
        """A page off the shop (the CDN's port) that runs analytics.js and sends a page call."""
        settings = Settings(write_key=WRITE_KEY, cdn_url=self.cdn.url)
        show_cookie = (
            "<script>analytics.ready(function(){"
            'document.documentElement.setAttribute("data-cookie",document.cookie)})</script>'
        )
        return f"{HEAD}{render_snippet(settings, page=True)}{SHOW_ID}{show_cookie}</head></html>"

    def classic_cookie_page(self, anonymous_id: str) -> str:
        """A page off the shop that stores ``anonymous_id`` as analytics.js classic did; its URL."""
        self.cdn.pages["/classic.html"] = (
            f"{HEAD}<script>"
            # a year, as analytics.js classic sets it (a session cookie would die with this Chromium)
            f'document.cookie = "ajs_anonymous_id=%22{anonymous_id}%22; path=/; max-age=31536000";'
            "document.documentElement.setAttribute('data-cookie', document.cookie)"
            "</script></head></html>"
        )
        return self.cdn.url + "/classic.html"

    def server_pages(self, anonymous_id: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self.receiver.messages
            if m["type"] == "page"
            and m.get("anonymousId") == anonymous_id
            and m["context"]["library"]["name"] != "analytics.js"
        ]

    def browser_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.receiver.messages if m["context"]["library"]["name"] == "analytics.js"]


@pytest.fixture
def stack(receiver: SegmentReceiver, tmp_path: Path) -> Iterator[Stack]:
    cdn = Cdn(receiver)
    cdn.thread.start()
    env = {
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": receiver.url,
        "SEGMENT_CDN_URL": cdn.url,
        "SEGMENT_FLUSH_INTERVAL": "0.2",
        "SEGMENT_SHUTDOWN_TIMEOUT": "5",
        "SEGMENT_LOCAL_STORE": str(tmp_path / "spool.sqlite3"),
        "TEST_TMP": str(tmp_path),
    }
    shop = gunicorn("app:app", env, "--workers", "2", "--preload", chdir=ROOT / "example_flask")
    try:
        shop.wait_ready()
        yield Stack(receiver, cdn, shop, tmp_path)
    finally:
        shop.kill()
        cdn.shutdown()
        cdn.server_close()


def stop_shop(stack: Stack) -> None:
    """SIGTERM: gunicorn's workers flush what they still hold before exiting."""
    assert stack.shop.stop() == 0, stack.shop.output()


def analytics_js_came_from_the_cdn(stack: Stack) -> None:
    served = stack.cdn.served()
    assert f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js" in served, served
    assert f"/v1/projects/{WRITE_KEY}/settings" in served, served
    assert not [path for path, status in stack.cdn.log if status != 200], stack.cdn.log


# ---------------------------------------------------------------------- the visitors


def test_a_new_visitor_keeps_the_id_the_server_made(stack: Stack) -> None:
    url = stack.shop_url("a")
    load = browse(stack.profile("a"), url, stack.tmp)
    browser_id = load.anonymous_id
    (cookie,) = load.set_cookies()
    assert cookie.startswith(f"ajs_anonymous_id=%22{browser_id}%22;"), cookie
    stop_shop(stack)

    (page,) = stack.server_pages(browser_id)
    assert page["properties"]["search"] == "?n=a"
    assert [m["anonymousId"] for m in stack.receiver.messages] == [browser_id]
    load.check_only_local()
    analytics_js_came_from_the_cdn(stack)


def test_b_the_server_keeps_the_id_analytics_js_made(stack: Stack) -> None:
    stack.cdn.pages["/first.html"] = stack.snippet_page()
    profile = stack.profile("b")
    first = browse(profile, stack.cdn.url + "/first.html", stack.tmp)
    browser_id = first.anonymous_id
    # analytics-next made the id and wrote it to the cookie in its raw form (no %22 quotes)
    assert f'data-cookie="ajs_anonymous_id={browser_id}"' in first.dom, first.dom[:300]
    (browser_page,) = stack.receiver.wait_for(1)
    assert browser_page["type"] == "page" and browser_page["anonymousId"] == browser_id
    (sent,) = stack.receiver.requests
    assert (sent.path, sent.status, sent.auth_ok) == ("/v1/p", 200, True)

    url = stack.shop_url("b")
    shop = browse(profile, url, stack.tmp)
    assert shop.anonymous_id == browser_id
    assert shop.set_cookies() == [], "the visitor already has an id: no new cookie"
    stop_shop(stack)

    (page,) = stack.server_pages(browser_id)
    assert page["properties"]["search"] == "?n=b"
    assert {m["anonymousId"] for m in stack.receiver.messages} == {browser_id}
    assert [m["type"] for m in stack.browser_messages()] == ["page"]
    first.check_only_local()
    shop.check_only_local()
    analytics_js_came_from_the_cdn(stack)


def test_c_a_classic_analytics_js_cookie_is_one_id_for_both(stack: Stack) -> None:
    known = str(uuid.uuid4())
    profile = stack.profile("c")
    first = browse(profile, stack.classic_cookie_page(known), stack.tmp)
    assert f'data-cookie="ajs_anonymous_id=%22{known}%22"' in first.dom

    url = stack.shop_url("c")
    shop = browse(profile, url, stack.tmp)
    assert shop.anonymous_id == known
    assert shop.set_cookies() == []
    stop_shop(stack)

    (page,) = stack.server_pages(known)
    assert page["properties"]["search"] == "?n=c"
    assert [m["anonymousId"] for m in stack.receiver.messages] == [known]
    first.check_only_local()
    shop.check_only_local()
    analytics_js_came_from_the_cdn(stack)


def test_d_the_cookie_beats_an_older_id_in_local_storage(stack: Stack) -> None:
    """A visitor whose cookie changed since analytics.js stored an id in the shop's localStorage.

    Only the cookie reaches the server, so the browser must follow it, not localStorage.
    What makes it do so is the snippet's storage order (cookie first), which analytics.js
    must actually run with: checked below. analytics-next 1.84 also lets a cookie win a
    disagreement by itself (its ``getConsistent`` storage), so on this release the id check
    alone would pass without the snippet's order; it guards the outcome on any release.
    """
    profile = stack.profile("d")
    before = browse(profile, stack.shop_url("d1"), stack.tmp)
    old_id = before.anonymous_id  # the server's, now also in the shop origin's localStorage
    new_id = str(uuid.uuid4())
    browse(profile, stack.classic_cookie_page(new_id), stack.tmp)

    after = browse(profile, stack.shop_url("d2"), stack.tmp)
    assert after.stores == ["cookie", "localStorage", "memory"]
    assert after.anonymous_id == new_id != old_id
    assert after.set_cookies() == []
    stop_shop(stack)

    assert [m["properties"]["search"] for m in stack.server_pages(old_id)] == ["?n=d1"]
    assert [m["properties"]["search"] for m in stack.server_pages(new_id)] == ["?n=d2"]
    assert len(stack.receiver.messages) == 2
    before.check_only_local()
    after.check_only_local()
