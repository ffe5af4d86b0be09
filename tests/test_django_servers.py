"""example_django under real gunicorn and uvicorn: every page call arrives once, after SIGTERM.

The flush interval is set far beyond the test's length, so what arrives was delivered by
the shutdown flush, not by the periodic one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

pytest.importorskip("django")

from helpers import WRITE_KEY
from servers import ROOT, Server, gunicorn, uvicorn

from segment_middleware.testing import SegmentReceiver

EXAMPLE = ROOT / "example_django"
BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) pytest",
    "Accept-Language": "fr-FR,fr;q=0.8",
    "Referer": "http://127.0.0.1/elsewhere",
}


@pytest.fixture(scope="module")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("shop") / "db.sqlite3"
    env = {**os.environ, "SHOP_DB": str(db), "DJANGO_SETTINGS_MODULE": "shop.settings"}
    for command in (["migrate", "--noinput"], ["seed_shop"]):
        subprocess.run(
            [sys.executable, str(EXAMPLE / "manage.py"), *command],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return db


@pytest.fixture
def shop_env(shop_db: Path, receiver: SegmentReceiver, tmp_path: Path) -> dict[str, str]:
    return {
        "SHOP_DB": str(shop_db),
        "DJANGO_SETTINGS_MODULE": "shop.settings",  # not the in-process tests' djapp
        "DJANGO_DEBUG": "0",
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": receiver.url,
        "SEGMENT_FLUSH_INTERVAL": "60",
        "SEGMENT_SHUTDOWN_TIMEOUT": "5",
        "SEGMENT_LOCAL_STORE": str(tmp_path / "spool.sqlite3"),
        "TEST_TMP": str(tmp_path),
    }


@pytest.fixture
def stop_at_end() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.kill()


def drive(server: Server, paths: list[str]) -> dict[str, str]:
    """Request each path as a new visitor; returns n -> the anonymousId cookie it was given."""
    given: dict[str, str] = {}
    for path in paths:
        response = server.get(path, headers=BROWSER)
        assert response.status == 200, (path, response.status, server.output())
        n = parse_qs(path.split("?", 1)[1])["n"][0]
        (cookie,) = [c for c in response.cookies() if c.startswith("ajs_anonymous_id=")]
        value = cookie.split(";", 1)[0].split("=", 1)[1]
        assert value.startswith("%22") and value.endswith("%22")
        given[n] = value[3:-3]
    return given


def check_arrivals(receiver: SegmentReceiver, given: dict[str, str], port: int) -> None:
    pages = [m for m in receiver.messages if m["type"] == "page"]
    seen = Counter(parse_qs(m["properties"]["search"][1:]).get("n", ["?"])[0] for m in pages)
    assert seen == Counter(given.keys()), "each tracked request must arrive exactly once"
    dupes = [mid for mid, msgs in receiver.by_message_id().items() if len(msgs) > 1]
    assert not dupes
    for msg in pages:
        n = parse_qs(msg["properties"]["search"][1:])["n"][0]
        assert msg["anonymousId"] == given[n]
        assert msg["properties"]["status"] == 200
        assert msg["properties"]["method"] == "GET"
        assert msg["properties"]["url"] == f"http://127.0.0.1:{port}{msg['properties']['path']}?n={n}"
        assert msg["properties"]["referrer"] == BROWSER["Referer"]
        assert msg["context"]["ip"] == "127.0.0.1"
        assert msg["context"]["userAgent"] == BROWSER["User-Agent"]
        assert msg["context"]["locale"] == "fr-FR"
        assert msg["context"]["page"]["url"] == msg["properties"]["url"]
    for request in receiver.requests:
        assert request.auth_ok


def non_utf8_cookie_is_served(server: Server) -> dict[str, str]:
    """Raw 0xFF 0xFE bytes in the Cookie header (http.client sends str as latin-1)."""
    response = server.get("/?n=raw", headers={**BROWSER, "Cookie": "ajs_anonymous_id=\xff\xfe%FF; x=\x80"})
    assert response.status == 200
    (cookie,) = [c for c in response.cookies() if c.startswith("ajs_anonymous_id=")]
    return {"raw": cookie.split(";", 1)[0].split("=", 1)[1][3:-3]}


def excluded_sends_nothing(server: Server) -> None:
    response = server.get("/health", headers=BROWSER)
    assert response.status == 200
    assert not [c for c in response.cookies() if c.startswith("ajs_anonymous_id=")]


@pytest.mark.parametrize(
    "worker_args",
    [
        pytest.param(["--workers", "2", "--preload"], id="sync-2-workers-preload"),
        pytest.param(["--workers", "1", "--worker-class", "gthread", "--threads", "4"], id="gthread"),
    ],
)
def test_gunicorn_delivers_every_page_once_on_sigterm(
    receiver: SegmentReceiver, shop_env: dict[str, str], stop_at_end: list[Server], worker_args: list[str]
) -> None:
    server = gunicorn("shop.wsgi:application", shop_env, *worker_args, chdir=EXAMPLE)
    stop_at_end.append(server)
    server.wait_ready()
    paths = [f"/?n={i}" if i % 2 else f"/products/ceramic-mug/?n={i}" for i in range(30)]
    given = drive(server, paths)
    given.update(non_utf8_cookie_is_served(server))
    excluded_sends_nothing(server)
    assert receiver.messages == [], "nothing should be sent before shutdown with a 60 s flush interval"
    assert server.stop() == 0
    assert server.exit_seconds is not None and server.exit_seconds < 15
    check_arrivals(receiver, given, server.port)
    tracks = [m for m in receiver.messages if m["type"] == "track"]
    assert len(tracks) == 15 and {m["event"] for m in tracks} == {"Product Viewed"}
    assert all(m["properties"]["sku"] == "KIT-MUG-350" for m in tracks)


def test_uvicorn_async_views_deliver_every_page_once_on_sigterm(
    receiver: SegmentReceiver, shop_env: dict[str, str], stop_at_end: list[Server]
) -> None:
    server = uvicorn("shop.asgi:application", shop_env, app_dir=EXAMPLE)
    stop_at_end.append(server)
    server.wait_ready()
    paths = [f"/api/stock/espresso-beans?n={i}" if i % 2 else f"/api/ping?n={i}" for i in range(20)]
    given = drive(server, paths)
    excluded_sends_nothing(server)
    assert receiver.messages == []
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn 0.29+ re-raises SIGTERM after shutdown
    assert server.exit_seconds is not None and server.exit_seconds < 15
    check_arrivals(receiver, given, server.port)
    tracks = [m for m in receiver.messages if m["type"] == "track"]
    assert len(tracks) == 10 and {m["event"] for m in tracks} == {"Stock Checked"}
    names = Counter(m["name"] for m in receiver.messages if m["type"] == "page")
    assert names == {"api-stock": 10, "api-ping": 10}
