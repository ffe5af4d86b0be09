"""First-party mode in a real browser (issue 26): analytics.js talks to the site, not Segment.

Headless Chromium loads ``tests/apps/first_party_app.py`` (FastAPI under uvicorn), whose page
renders ``segment_snippet(first_party=True)`` and makes two browser calls, an
``identify("someone-else")`` and a ``track``. They must reach the Segment-compatible receiver
through the app's collection mount, with the server's userId (the signed-in user, or none),
the cookie's anonymousId and the server's view of the IP; the browser itself must send
nothing to the receiver (Segment's API) and, with SERVE_ANALYTICS_JS, request nothing from
any host but the app, not even the CDN (which the app then fetches from itself).

The browser, the CDN stand-in and the network log are tests/test_browser.py's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import WRITE_KEY, stored, wait_until
from segment_receiver import SegmentReceiver
from servers import ROOT, Server, gunicorn, uvicorn
from test_browser import UMD, Cdn, Load, _browser_deps, browse  # noqa: F401 (an autouse fixture)

from segment_middleware.assets import LOCAL_KEY

APPS = ROOT / "tests" / "apps"
SENT = re.compile(r'<html[^>]*\sdata-sent="1"')


@dataclass
class Site:
    app: Server
    receiver: SegmentReceiver
    cdn: Cdn
    tmp: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    def visit(self, profile: str, path: str = "/") -> Load:
        load = browse(self.tmp / f"profile-{profile}", self.origin + path, self.tmp)
        load.check_only_local()
        return load

    def browser_hosts(self, load: Load) -> set[str]:
        """The host:port of every request a page made (Chromium's own traffic left out)."""
        return {
            urlsplit(r.url).netloc
            for r in load.requests
            if urlsplit(r.url).scheme in ("http", "https") and not r.chromiums_own
        }

    def browser_calls(self) -> list[dict[str, Any]]:
        return [
            m for m in self.receiver.messages if m["context"].get("library", {}).get("name") == "analytics.js"
        ]


@pytest.fixture
def site(request: pytest.FixtureRequest, receiver: SegmentReceiver, tmp_path: Path) -> Iterator[Site]:
    """The app; ``request.param`` adds environment variables (TEST_SERVE_JS, ...)."""
    cdn = Cdn(receiver)  # its settings point Segment.io at the receiver: first-party must win
    cdn.thread.start()
    env = {
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": receiver.url,
        "SEGMENT_CDN_URL": cdn.url,
        "SEGMENT_LOCAL_STORE": str(tmp_path / "store" / "events.sqlite3"),
        "TEST_TMP": str(tmp_path),
        **getattr(request, "param", {}),
    }
    env = {k: v for k, v in env.items() if v is not None}
    app = uvicorn("first_party_app:app", env, app_dir=APPS)
    try:
        app.wait_ready()
        yield Site(app, receiver, cdn, tmp_path)
    finally:
        app.kill()
        cdn.shutdown()
        cdn.server_close()


def calls_were_answered(load: Load) -> str:
    assert SENT.search(load.dom), f"the browser's calls were not answered; DOM:\n{load.dom[:3000]}"
    return load.anonymous_id


def check_browser_calls(site: Site, anonymous_id: str, user_id: str | None) -> None:
    wait_until(lambda: len(site.browser_calls()) >= 2, "the browser's two calls at the receiver")
    assert site.app.stop() in (0, -15), site.app.output()  # uvicorn may end by the signal
    identify, track = site.browser_calls()
    assert (identify["type"], track["type"]) == ("identify", "track")
    assert identify["traits"] == {"plan": "pro"}
    assert track["event"] == "Button Clicked" and track["properties"] == {"color": "green"}
    for message in (identify, track):
        assert message.get("userId") == user_id, message  # never "someone-else"
        assert message["anonymousId"] == anonymous_id
        assert message["context"]["ip"] == "127.0.0.1"  # the server's view of the client
        assert message["context"]["page"]["path"] == "/"
    # the browser posted nothing to Segment's API (the receiver): only the app's batches came
    assert {r.path for r in site.receiver.requests} == {"/v1/batch"}, site.receiver.requests


def test_browser_calls_go_through_the_app_with_the_servers_ids(site: Site) -> None:
    load = site.visit("anonymous")
    anonymous_id = calls_were_answered(load)
    (cookie,) = load.set_cookies()
    assert cookie.startswith(f"ajs_anonymous_id=%22{anonymous_id}%22;")
    check_browser_calls(site, anonymous_id, None)
    # analytics.js came from the CDN; the calls went to the app, not to the CDN's apiHost
    assert site.browser_hosts(load) == {
        f"127.0.0.1:{site.app.port}",
        f"127.0.0.1:{site.cdn.server_address[1]}",
    }
    posted = [urlsplit(r.url).path for r in load.requests if "/segment/v1/" in r.url]
    assert sorted(posted) == ["/segment/v1/i", "/segment/v1/t"], posted
    # and all the browser asked of the CDN was what it serves (GETs of files), no call
    cdn_host = f"127.0.0.1:{site.cdn.server_address[1]}"
    asked = {urlsplit(r.url).path for r in load.requests if urlsplit(r.url).netloc == cdn_host}
    assert asked and asked <= set(site.cdn.served()), (asked, site.cdn.log)


@pytest.mark.parametrize("site", [{"TEST_SERVE_JS": "1"}], indirect=True)
def test_with_serve_analytics_js_the_browser_talks_to_the_app_only(site: Site) -> None:
    site.visit("signed-in", "/signin/42")
    load = site.visit("signed-in")
    anonymous_id = calls_were_answered(load)
    check_browser_calls(site, anonymous_id, "42")
    assert site.browser_hosts(load) == {f"127.0.0.1:{site.app.port}"}
    fetched = site.cdn.served()  # by the app, for the browser
    assert f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js" in fetched
    assert f"/v1/projects/{WRITE_KEY}/settings" in fetched
    served = {urlsplit(r.url).path for r in load.requests}
    assert f"/segment/analytics.js/v1/{WRITE_KEY}/analytics.min.js" in served
    assert f"/segment/v1/projects/{WRITE_KEY}/settings" in served


@pytest.mark.parametrize(
    "site", [{"TEST_SERVE_JS": "1", "TEST_JS_DIR": str(UMD), "SEGMENT_WRITE_KEY": None}], indirect=True
)
def test_without_a_write_key_the_browser_calls_reach_the_local_store(site: Site) -> None:
    """The examples' offline mode: no Segment account, no network, analytics.js from npm."""
    load = site.visit("local")
    anonymous_id = calls_were_answered(load)
    assert site.browser_hosts(load) == {f"127.0.0.1:{site.app.port}"}
    assert site.app.stop() in (0, -15), site.app.output()  # uvicorn may end by the signal
    rows = stored(site.tmp / "store" / "events.sqlite3")
    browser = [m for m in rows if m["context"].get("library", {}).get("name") == "analytics.js"]
    assert [m["type"] for m in browser] == ["identify", "track"]
    assert all(m["anonymousId"] == anonymous_id and "userId" not in m for m in browser)
    assert site.cdn.log == [] and site.receiver.requests == []


# ---------------------------------------------------------------------- the example shops
EXAMPLES = {
    "django": lambda env: gunicorn("shop.wsgi:application", env, chdir=ROOT / "example_django"),
    "fastapi": lambda env: uvicorn("app:app", env, app_dir=ROOT / "example_fastapi"),
}


@pytest.mark.parametrize("shop", sorted(EXAMPLES))
def test_the_example_shops_run_analytics_js_from_their_own_mount(shop: str, tmp_path: Path) -> None:
    """``./dev example django|fastapi`` as a developer runs it: no write key, no network.
    analytics.js (the npm copy) and its settings come from the shop's /segment/ mount, and
    the page talks to nothing else."""
    env = {
        "SEGMENT_LOCAL_STORE": str(tmp_path / "events.sqlite3"),
        "SHOP_DB": str(tmp_path / "shop.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "TEST_TMP": str(tmp_path),
    }
    if shop == "django":
        manage = [sys.executable, str(ROOT / "example_django" / "manage.py")]
        for command in (["migrate", "--noinput"], ["seed_shop"]):
            subprocess.run(
                [*manage, *command], env={**os.environ, **env}, check=True, capture_output=True, timeout=120
            )
    server = EXAMPLES[shop](env)
    try:
        server.wait_ready()
        origin = f"http://127.0.0.1:{server.port}"
        load = browse(tmp_path / "profile", origin + "/", tmp_path)
        load.check_only_local()
        (cookie,) = load.set_cookies()
        assert cookie.startswith(f"ajs_anonymous_id=%22{load.anonymous_id}%22;")  # analytics.js ran
        hosts = {
            urlsplit(r.url).netloc for r in load.requests if r.url.startswith("http") and not r.chromiums_own
        }
        assert hosts == {f"127.0.0.1:{server.port}"}
        paths = {urlsplit(r.url).path for r in load.requests}
        assert f"/segment/v1/projects/{LOCAL_KEY}/settings" in paths
    finally:
        server.kill()
