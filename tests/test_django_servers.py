"""example_django under real gunicorn and uvicorn: every page call arrives once, after SIGTERM.

The flush interval is set far beyond the test's length, so what arrives was delivered by
the shutdown flush, not by the periodic one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import pytest

pytest.importorskip("django")

from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver
from servers import ROOT, Server, gunicorn, uvicorn
from visits import BROWSER, Visit, check_pages, cookie_id, drive, excluded_sends_nothing, visit

EXAMPLE = ROOT / "example_django"


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


def non_utf8_cookie_is_served(server: Server) -> Visit:
    """Raw 0xFF 0xFE bytes in the Cookie header (http.client sends str as latin-1)."""
    raw = visit(server, "/?n=raw", {"Cookie": "ajs_anonymous_id=\xff\xfe%FF; x=\x80"})
    assert raw.anonymous_id, "an unreadable id is replaced by a fresh one"
    return raw


@pytest.mark.parametrize(
    "worker_args",
    [
        pytest.param(["--workers", "2", "--preload"], id="sync-2-workers-preload"),
        pytest.param(["--workers", "1", "--worker-class", "gthread", "--threads", "4"], id="gthread"),
    ],
)
def test_gunicorn_delivers_every_page_once_on_sigterm(
    receiver: SegmentReceiver, shop_env: dict[str, str], servers: list[Server], worker_args: list[str]
) -> None:
    server = gunicorn("shop.wsgi:application", shop_env, *worker_args, chdir=EXAMPLE)
    servers.append(server)
    server.wait_ready()
    paths = [f"/?n={i}" if i % 2 else f"/products/ceramic-mug/?n={i}" for i in range(30)]
    visits = [*drive(server, paths), non_utf8_cookie_is_served(server)]
    excluded_sends_nothing(server)
    assert receiver.messages == [], "nothing should be sent before shutdown with a 60 s flush interval"
    assert server.stop() == 0
    assert server.exit_seconds is not None and server.exit_seconds < 15
    check_pages(receiver, visits, server.port)
    tracks = [m for m in receiver.messages if m["type"] == "track"]
    assert len(tracks) == 15 and {m["event"] for m in tracks} == {"Product Viewed"}
    assert all(m["properties"]["sku"] == "KIT-MUG-350" for m in tracks)


def test_log_in_and_out_stitch_and_reset_the_visitor_under_gunicorn(
    receiver: SegmentReceiver, shop_env: dict[str, str], servers: list[Server]
) -> None:
    """Anonymous visits, the sign-in form (CSRF and all), signed-in visits: one anonymousId
    across, and an identify linking it to the user. Then sign-out: a new anonymousId cookie,
    already on the sign-out's own page call without a userId, and on the next visit."""
    server = gunicorn("shop.wsgi:application", shop_env, chdir=EXAMPLE)
    servers.append(server)
    server.wait_ready()
    first = visit(server, "/?n=anon")
    anon = first.anonymous_id
    form = server.request("GET", "/signin/?n=form", {**BROWSER, "Cookie": f"ajs_anonymous_id=%22{anon}%22"})
    assert form.status == 200
    (csrf,) = [c.split(";", 1)[0] for c in form.cookies() if c.startswith("csrftoken=")]
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.body)
    assert match is not None
    body = urlencode({"username": "alice", "password": "alice-password", "csrfmiddlewaretoken": match[1]})
    signin = server.request(
        "POST",
        "/signin/?n=signin",
        {
            **BROWSER,
            "Cookie": f"ajs_anonymous_id=%22{anon}%22; {csrf}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body.encode(),
    )
    assert signin.status == 302, server.output()
    jar = {c.split("=", 1)[0]: c.split(";", 1)[0] for c in signin.cookies()}
    session, csrf = jar["sessionid"], jar.get("csrftoken", csrf)  # Django rotates the token at log-in
    signed = {**BROWSER, "Cookie": f"ajs_anonymous_id=%22{anon}%22; {session}; {csrf}"}
    assert server.request("GET", "/?n=user", signed).status == 200
    signout = server.request("POST", "/signout/?n=signout", {**signed, "X-CSRFToken": csrf.split("=", 1)[1]})
    assert signout.status == 302, server.output()
    fresh = cookie_id(signout.cookies())
    assert fresh and fresh != anon
    assert (
        server.request("GET", "/?n=after", {**BROWSER, "Cookie": f"ajs_anonymous_id=%22{fresh}%22"}).status
        == 200
    )
    assert server.stop() == 0

    (identify,) = [m for m in receiver.messages if m["type"] == "identify"]
    user = identify["userId"]
    assert identify["anonymousId"] == anon and user
    check_pages(
        receiver,
        [
            first,
            Visit("form", "/signin/?n=form", anon),
            Visit("signin", "/signin/?n=signin", anon, 302, "POST", user_id=user),
            Visit("user", "/?n=user", anon, user_id=user),
            Visit("signout", "/signout/?n=signout", fresh, 302, "POST"),
            Visit("after", "/?n=after", fresh),
        ],
        server.port,
    )


def test_uvicorn_async_views_deliver_every_page_once_on_sigterm(
    receiver: SegmentReceiver, shop_env: dict[str, str], servers: list[Server]
) -> None:
    server = uvicorn("shop.asgi:application", shop_env, app_dir=EXAMPLE)
    servers.append(server)
    server.wait_ready()
    paths = [f"/api/stock/espresso-beans?n={i}" if i % 2 else f"/api/ping?n={i}" for i in range(20)]
    visits = drive(server, paths)
    excluded_sends_nothing(server)
    assert receiver.messages == []
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn 0.29+ re-raises SIGTERM after shutdown
    assert server.exit_seconds is not None and server.exit_seconds < 15
    check_pages(receiver, visits, server.port)
    tracks = [m for m in receiver.messages if m["type"] == "track"]
    assert len(tracks) == 10 and {m["event"] for m in tracks} == {"Stock Checked"}
    names = Counter(m["name"] for m in receiver.messages if m["type"] == "page")
    assert names == {"api-stock": 10, "api-ping": 10}
