"""First-party mode in process: the snippet's ``first_party`` flag and SERVE_ANALYTICS_JS.

The assets are fetched from a stand-in for Segment's CDN on 127.0.0.1 that counts what it
is asked for (never the real CDN); the clock is a test's own. Each framework's mount is
checked through its test client (Django, Flask, Starlette) and the plain WSGI app; the
browser's view of all this is tests/test_browser_first_party.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_collect_servers import start

from segment_middleware.assets import LOCAL_KEY, Assets, asset_route, browser_key
from segment_middleware.settings import Settings, SettingsError
from segment_middleware.snippet import render_snippet

UMD = (
    Path(__file__).resolve().parent
    / "browser"
    / "node_modules"
    / "@segment"
    / "analytics-next"
    / "dist"
    / "umd"
)
BUNDLE = b'/* analytics.min.js */ {1:"aaaaaaaa11",2:"bbbbbbbb22",7:"cccccccc77"}'  # its chunks' hashes
SETTINGS = {
    "integrations": {
        "Segment.io": {"apiKey": WRITE_KEY, "apiHost": "api.segment.io/v1"},
        "Google Analytics": {"versionSettings": {"version": "2.18.1"}},  # a classic destination
    },
    "remotePlugins": [{"name": "X", "url": "CDN/next-integrations/actions/x/x.js"}],
}


class FakeCdn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.down = False
        super().__init__(("127.0.0.1", 0), _CdnHandler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CdnHandler(BaseHTTPRequestHandler):
    server: FakeCdn

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body: bytes | None = None
        if self.server.down:
            body = None
        elif self.path == f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js":
            body = BUNDLE
        elif self.path == f"/v1/projects/{WRITE_KEY}/settings":
            body = json.dumps(SETTINGS).replace("CDN/", self.server.url + "/").encode()
        elif self.path.startswith("/analytics-next/bundles/") or self.path.startswith("/next-integrations/"):
            body = b"/* " + self.path.encode() + b" */"
        self.send_response(200 if body is not None else 503)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture
def cdn() -> Iterator[FakeCdn]:
    server = FakeCdn()
    yield server
    server.shutdown()
    server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def assets(cdn: FakeCdn, tmp_path: Path, clock: Clock | None = None, **settings: Any) -> Assets:
    s = Settings(
        write_key=settings.pop("write_key", WRITE_KEY),
        cdn_url=cdn.url,
        serve_analytics_js=True,
        local_store=str(tmp_path / "events.sqlite3"),
        **settings,
    )
    return Assets(s, clock=clock or Clock())


def get(a: Assets, route: str, site: str = "https://shop.example/segment") -> Any:
    found = asset_route(route)
    assert found is not None, route
    return a.serve(found, "GET", site)


# ---------------------------------------------------------------------- the snippet
def test_first_party_points_segment_io_at_the_mount_from_the_pages_location() -> None:
    s = Settings(write_key=WRITE_KEY, cdn_url="https://cdn.example")
    plain = render_snippet(s)
    html = render_snippet(s, first_party=True, load_options={"integrations": {"Segment.io": {"x": 1}}})
    assert "apiHost" not in plain
    assert 's.apiHost=location.host+m+"/v1";s.protocol=location.protocol.slice(0,-1)' in html
    assert '{"integrations":{"Segment.io":{"x":1}},"storage"' in html  # kept, then apiHost added
    assert '"/segment"))' in html and 'analytics._cdn="https://cdn.example"' in html
    mounted = render_snippet(s.replace(collect_prefix="/t/"), first_party=True)
    assert '"/t"))' in mounted


def test_serve_analytics_js_loads_it_from_the_mount() -> None:
    s = Settings(write_key=WRITE_KEY, serve_analytics_js=True, browser_write_key="browser-key")
    html = render_snippet(s, first_party=True)
    assert 'analytics._cdn=location.protocol+"//"+location.host+"/segment"' in html
    assert 'analytics.load("browser-key"' in html  # the key the mount checks bodies against


def test_without_a_write_key_only_first_party_serving_loads_analytics_js() -> None:
    assert "<script" not in render_snippet(Settings(), first_party=True)
    assert "<script" not in render_snippet(Settings(serve_analytics_js=True))
    html = render_snippet(Settings(serve_analytics_js=True), first_party=True)
    assert f'analytics.load("{LOCAL_KEY}"' in html
    assert browser_key(Settings()) == LOCAL_KEY


def test_the_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="analytics_js_dir"):
        Settings(analytics_js_dir="/no/such/dir")
    with pytest.raises(SettingsError, match="analytics_js_settings"):
        Settings(analytics_js_settings="/no/such/file.json")
    with pytest.raises(SettingsError, match="serve_analytics_js"):
        Settings(serve_analytics_js="maybe")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the assets
def test_routes() -> None:
    assert asset_route("analytics.js/v1/k/analytics.min.js") == ("bundle", "k")
    assert asset_route("analytics-next/bundles/407.bundle.61ef.js") == ("chunk", "407.bundle.61ef.js")
    assert asset_route("v1/projects/k/settings") == ("settings", "k")
    assert asset_route("next-integrations/actions/x/x.js") == ("integration", "actions/x/x.js")
    for route in (
        "v1/t",
        "analytics-next/bundles/../x.js",
        "analytics-next/bundles/a/b.js",
        "next-integrations/../x.js",
    ):
        assert asset_route(route) is None, route


def test_fetched_once_then_kept_for_the_ttl(cdn: FakeCdn, tmp_path: Path) -> None:
    clock = Clock()
    a = assets(cdn, tmp_path, clock, analytics_js_cache_ttl=100)
    bundle = f"analytics.js/v1/{WRITE_KEY}/analytics.min.js"
    assert get(a, bundle).body == BUNDLE
    assert get(a, bundle).body == BUNDLE
    assert len(cdn.hits) == 1
    clock.now += 101
    assert get(a, bundle).status == 200
    assert len(cdn.hits) == 2
    chunk = get(a, "analytics-next/bundles/1.bundle.aaaaaaaa11.js")
    assert ("Cache-Control", "public, max-age=31536000, immutable") in chunk.headers
    clock.now += 10_000
    get(a, "analytics-next/bundles/1.bundle.aaaaaaaa11.js")  # content-hashed: never fetched again
    assert cdn.hits.count("/analytics-next/bundles/1.bundle.aaaaaaaa11.js") == 1


def test_another_worker_uses_the_copy_on_disk_and_a_dead_cdn_the_last_copy(
    cdn: FakeCdn, tmp_path: Path
) -> None:
    clock = Clock()
    first = assets(cdn, tmp_path, clock)
    settings_route = f"v1/projects/{WRITE_KEY}/settings"
    assert get(first, settings_route).status == 200
    assert get(first, f"analytics.js/v1/{WRITE_KEY}/analytics.min.js").status == 200
    second = assets(cdn, tmp_path, clock)  # same LOCAL_STORE folder: same cdn-cache
    assert get(second, settings_route).status == 200
    assert len(cdn.hits) == 2
    cdn.down = True
    clock.now += 10_000
    stale = get(second, settings_route)
    assert stale.status == 200 and json.loads(stale.body)["integrations"]["Segment.io"]["apiKey"] == WRITE_KEY
    assert len(cdn.hits) == 3  # it did ask
    assert get(second, "analytics-next/bundles/2.bundle.bbbbbbbb22.js").status == 502  # never had a copy
    asked = len(cdn.hits)
    assert get(second, settings_route).status == 200
    assert len(cdn.hits) == asked  # a CDN that just failed is not asked again at once


def test_settings_point_remote_plugins_at_the_mount(cdn: FakeCdn, tmp_path: Path) -> None:
    body = json.loads(get(assets(cdn, tmp_path), f"v1/projects/{WRITE_KEY}/settings").body)
    assert body["remotePlugins"][0]["url"] == "https://shop.example/segment/next-integrations/actions/x/x.js"


def test_only_the_sites_own_key_is_served(cdn: FakeCdn, tmp_path: Path) -> None:
    a = assets(cdn, tmp_path)
    assert get(a, "analytics.js/v1/someone-elses/analytics.min.js").status == 404
    assert get(a, "v1/projects/someone-elses/settings").status == 404
    assert cdn.hits == []


def test_only_what_the_bundle_and_settings_name_is_fetched(cdn: FakeCdn, tmp_path: Path) -> None:
    a = assets(cdn, tmp_path)
    assert get(a, "analytics-next/bundles/9.bundle.deadbeef99.js").status == 404  # not in the bundle
    assert get(a, "next-integrations/made/up.js").status == 404  # not in the settings
    assert get(a, "next-integrations/actions/x/x.js").status == 200  # named by the settings
    classic = "next-integrations/integrations/google-analytics/2.18.1/google-analytics.dynamic.js.gz"
    assert get(a, classic).status == 200
    assert get(a, "next-integrations/integrations/hotjar/1.0.0/hotjar.dynamic.js.gz").status == 404
    assert sorted(cdn.hits) == sorted(
        [
            f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js",
            f"/{classic}",
            "/next-integrations/actions/x/x.js",
            f"/v1/projects/{WRITE_KEY}/settings",
        ]
    )


def test_a_dead_cdn_without_any_copy_gives_minimal_settings(cdn: FakeCdn, tmp_path: Path) -> None:
    cdn.down = True
    body = json.loads(get(assets(cdn, tmp_path), f"v1/projects/{WRITE_KEY}/settings").body)
    assert body["integrations"] == {
        "Segment.io": {"apiKey": WRITE_KEY, "apiHost": "api.segment.io/v1", "protocol": "https"}
    }


def test_the_local_store_source_is_served_without_any_cdn(cdn: FakeCdn, tmp_path: Path) -> None:
    a = assets(cdn, tmp_path, write_key=None)
    body = json.loads(get(a, f"v1/projects/{LOCAL_KEY}/settings", "http://127.0.0.1:8000/segment").body)
    assert body["integrations"]["Segment.io"] == {
        "apiKey": LOCAL_KEY,
        "apiHost": "127.0.0.1:8000/segment/v1",
        "protocol": "http",
    }
    assert cdn.hits == []


@pytest.mark.skipif(not (UMD / "standalone.js").is_file(), reason="needs scripts/browser-deps")
def test_from_a_directory_and_a_settings_file(cdn: FakeCdn, tmp_path: Path) -> None:
    file = tmp_path / "settings.json"
    file.write_text(json.dumps({"integrations": {"Segment.io": {"apiKey": "from-file"}}}))
    a = assets(cdn, tmp_path, analytics_js_dir=str(UMD), analytics_js_settings=str(file))
    assert (
        get(a, f"analytics.js/v1/{WRITE_KEY}/analytics.min.js").body == (UMD / "standalone.js").read_bytes()
    )
    chunk = next(p.name for p in UMD.glob("*.bundle.*.js"))
    assert get(a, f"analytics-next/bundles/{chunk}").body == (UMD / chunk).read_bytes()
    assert get(a, "analytics-next/bundles/nothing.js").status == 404
    settings = json.loads(get(a, f"v1/projects/{WRITE_KEY}/settings").body)
    assert settings["integrations"]["Segment.io"]["apiKey"] == "from-file"
    assert cdn.hits == []


def test_settings_without_segment_io_get_it_so_first_party_can_point_it_at_the_mount(
    cdn: FakeCdn, tmp_path: Path
) -> None:
    """analytics-next applies load options only to integrations its settings list: a settings
    file with no ``Segment.io`` would leave the browser posting to api.segment.io."""
    for content in ({"integrations": {"Hotjar": {}}}, {"plan": {}}):
        file = tmp_path / "settings.json"
        file.write_text(json.dumps(content))
        a = assets(cdn, tmp_path, analytics_js_settings=str(file))
        settings = json.loads(get(a, f"v1/projects/{WRITE_KEY}/settings").body)
        assert settings["integrations"]["Segment.io"] == {"apiKey": WRITE_KEY}, content


# ---------------------------------------------------------------------- each framework's mount
def header(response: Any, name: str) -> str:
    return next((v for k, v in response.headers if k.lower() == name), "")


@pytest.mark.parametrize(
    "framework", ["django-gunicorn", "flask-gunicorn", "fastapi-uvicorn", "wsgi-gunicorn"]
)
def test_each_mount_serves_analytics_js_and_its_settings(
    framework: str, cdn: FakeCdn, receiver: Any, tmp_path: Path, servers: list[Any]
) -> None:
    """Under a real server: the files with their media types, 404 for another key, the
    telemetry answered, and none of it a page call of the site."""
    server = start(framework, receiver, tmp_path, servers, TEST_SERVE_JS="1", SEGMENT_CDN_URL=cdn.url)
    js = server.get(f"/segment/analytics.js/v1/{WRITE_KEY}/analytics.min.js")
    assert (js.status, js.body) == (200, BUNDLE), server.output()
    assert header(js, "content-type").startswith("application/javascript")
    chunk = server.get("/segment/analytics-next/bundles/7.bundle.cccccccc77.js")
    assert chunk.status == 200 and header(chunk, "cache-control").endswith("immutable")
    settings = server.get(f"/segment/v1/projects/{WRITE_KEY}/settings")
    assert settings.status == 200 and header(settings, "content-type").startswith("application/json")
    plugin = json.loads(settings.body)["remotePlugins"][0]["url"]
    assert plugin == f"http://127.0.0.1:{server.port}/segment/next-integrations/actions/x/x.js"
    assert server.get("/segment/next-integrations/actions/x/x.js").status == 200
    assert server.get("/segment/v1/projects/other-key/settings").status == 404
    telemetry = server.request("POST", "/segment/v1/m", {"Content-Type": "text/plain"}, b'{"series":[]}')
    assert telemetry.status == 200
    assert server.get("/segment/v1/projects/other-key/settings").status == 404
    assert server.get("/stats").status == 200  # a page of the site: its call is the end marker
    assert server.stop() in (0, -15), server.output()  # flushes what the workers hold
    paths = [m["properties"]["path"] for m in receiver.messages if m["type"] == "page"]
    assert paths == ["/stats"], "no page call for the mount's files"
    assert [c for r in (js, chunk, settings) for c in r.cookies()] == []


def test_off_by_default(receiver: Any, tmp_path: Path, servers: list[Any], cdn: FakeCdn) -> None:
    server = start("fastapi-uvicorn", receiver, tmp_path, servers, SEGMENT_CDN_URL=cdn.url)
    assert server.get(f"/segment/analytics.js/v1/{WRITE_KEY}/analytics.min.js").status == 404
    assert cdn.hits == []


# ---------------------------------------------------------------------- the per-address limit
def _post(runtime: Any, anonymous_id: str, address: str) -> Any:
    """analytics.js's track with no cookie at all: the body's anonymousId is the visitor."""
    from segment_middleware.collect import CollectRequest, handle

    body = json.dumps({"type": "track", "event": "E", "anonymousId": anonymous_id}).encode()
    return handle(
        runtime,
        CollectRequest(
            method="POST",
            route="v1/t",
            headers={"host": "shop.example", "content-type": "text/plain"},
            body=body,
            scheme="https",
            path="/segment/v1/t",
            query="",
            remote_addr=address,
            user_id=lambda: None,
        ),
    )


@pytest.mark.parametrize(("per_ip", "accepted"), [("10x", 20), (None, 30), ("3/h burst 4", 4)])
def test_a_client_rotating_anonymous_ids_meets_the_per_address_limit(
    per_ip: str | None, accepted: int, store_path: str
) -> None:
    from segment_middleware.core import Runtime
    from segment_middleware.testing import capture

    runtime = Runtime(
        Settings(local_store=store_path, collect_rate_limit="1/h burst 2", collect_ip_rate_limit=per_ip)
    )
    try:
        with capture() as events:
            answers = [_post(runtime, f"made-up-{n}", "198.51.100.7") for n in range(30)]
            elsewhere = _post(runtime, "someone", "198.51.100.8")
        statuses = [a.status for a in answers]
        assert statuses == [200] * accepted + [429] * (30 - accepted)
        if accepted < 30:
            refused = answers[accepted]
            assert "COLLECT_IP_RATE_LIMIT" in refused.body["error"]
            assert int(dict(refused.headers)["Retry-After"]) >= 1
        assert elsewhere.status == 200  # another address has its own budget
        assert len(list(events)) == accepted + 1
        assert runtime.delivery.stats()["limited"] == 30 - accepted
    finally:
        runtime.delivery.shutdown(2)


def test_the_per_address_limit_setting_is_checked() -> None:
    assert Settings().ip_rate_limit == (200.0, 2000)  # ten times the visitor's default
    assert Settings(collect_rate_limit=None).ip_rate_limit is None
    with pytest.raises(SettingsError, match="10x"):
        Settings(collect_ip_rate_limit="lots")
    with pytest.raises(SettingsError):
        Settings(collect_ip_rate_limit="0x")


# ---------------------------------------------------------------------- any path, never a 500
_PREFIXES = ("analytics.js/v1/", "analytics-next/bundles/", "v1/projects/", "next-integrations/", "v1/", "")


@given(
    prefix=st.sampled_from(_PREFIXES),
    rest=st.text(max_size=80),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
)
@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_path_under_the_mount_is_answered_never_a_500(
    prefix: str, rest: str, method: str, asset_runtime: Any
) -> None:
    from segment_middleware.collect import CollectRequest, handle

    route = prefix + rest
    answer = handle(
        asset_runtime,
        CollectRequest(
            method=method,
            route=route,
            headers={"host": "shop.example"},
            body=b"" if method != "POST" else b"{}",
            scheme="https",
            path="/segment/" + route,
            query="",
            remote_addr="192.0.2.1",
            user_id=lambda: None,
        ),
    )
    assert answer.status < 500 or answer.status == 502, (route, answer.status, answer.body)
    assert isinstance(answer.content, bytes)


@pytest.fixture
def asset_runtime(store_path: str) -> Iterator[Any]:
    """SERVE_ANALYTICS_JS with a CDN that refuses every connection (a closed port)."""
    from segment_middleware.core import Runtime

    runtime = Runtime(Settings(local_store=store_path, serve_analytics_js=True, cdn_url="http://127.0.0.1:9"))
    yield runtime
    runtime.delivery.shutdown(2)
