"""Flask, FastAPI, Starlette and plain WSGI under real gunicorn/uvicorn processes.

Each server runs with a 60 s flush interval, so what the receiver has after SIGTERM was
delivered by the shutdown flush. Every tracked request's page call must arrive exactly once
with the SPEC 3 fields; excluded paths send nothing; signed-in users, the X-Anonymous-Id
header, failing views and streamed responses are covered on each stack.
"""

from __future__ import annotations

import http.client
import signal
import time
import urllib.parse
from pathlib import Path

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver
from servers import ROOT, Server, gunicorn, uvicorn
from visits import BROWSER, Visit, check_pages, cookie_id, drive, excluded_sends_nothing, visit

APPS = ROOT / "tests" / "apps"
UVICORN_EXIT = (0, -signal.SIGTERM)  # uvicorn 0.29+ re-raises SIGTERM after a clean shutdown


@pytest.fixture
def env(receiver: SegmentReceiver, tmp_path: Path) -> dict[str, str]:
    return {
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": receiver.url,
        "SEGMENT_FLUSH_INTERVAL": "60",
        "SEGMENT_SHUTDOWN_TIMEOUT": "5",
        "SEGMENT_LOCAL_STORE": str(tmp_path / "store.sqlite3"),
        "TEST_TMP": str(tmp_path),
    }


def start(servers: list[Server], server: Server) -> Server:
    servers.append(server)
    server.wait_ready()
    return server


def header_visitor(server: Server, target: str) -> Visit:
    """A client that sends X-Anonymous-Id (a mobile app, an API client): no cookie is set."""
    v = visit(server, target, {"X-Anonymous-Id": "header-visitor-7"})
    assert v.anonymous_id == "", "a valid header id needs no cookie"
    v.anonymous_id = "header-visitor-7"
    return v


def returning_visitor(server: Server, target: str, anonymous_id: str, status: int = 200) -> Visit:
    """A visitor whose cookie already holds an id (so a failing request's page call is known)."""
    v = visit(server, target, {"Cookie": f"ajs_anonymous_id=%22{anonymous_id}%22"}, status=status)
    assert v.anonymous_id == "", "a visitor with a valid id gets no new cookie"
    v.anonymous_id = anonymous_id
    return v


def read_stream(server: Server, target: str) -> tuple[list[tuple[float, bytes]], str | None]:
    """(arrival time, line) for each line of a streamed body, and the Set-Cookie id."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", target, headers=BROWSER)
        response = conn.getresponse()
        assert response.status == 200
        cookie = cookie_id(v for k, v in response.getheaders() if k.lower() == "set-cookie")
        lines = []
        while True:
            line = response.readline()
            if not line:
                break
            lines.append((time.time(), line))
        return lines, cookie
    finally:
        conn.close()


def assert_not_buffered(lines: list[tuple[float, bytes]]) -> None:
    """The first line reached the client before the server produced the last one."""
    assert len(lines) >= 3, lines
    first_arrived = lines[0][0]
    last_produced = float(lines[-1][1].split()[-1])
    assert first_arrived < last_produced, f"body was buffered: {lines}"


def stream_visit(server: Server, target: str) -> Visit:
    lines, cookie = read_stream(server, target)
    assert_not_buffered(lines)
    assert cookie, "a streamed response still sets the visitor's cookie (headers go first)"
    return Visit(urllib.parse.parse_qs(target.split("?", 1)[1])["n"][0], target, cookie)


def stop(server: Server, exit_codes: tuple[int, ...] = (0,)) -> None:
    assert server.stop() in exit_codes, server.output()
    assert server.exit_seconds is not None and server.exit_seconds < 15


# ---------------------------------------------------------------------- Flask
def flask_sign_in(server: Server, anonymous_id: str) -> tuple[Visit, str]:
    """Flask-Login sign-in as alice; returns the POST's visit and the session cookie."""
    body = urllib.parse.urlencode({"username": "alice", "password": "alice-password"}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"ajs_anonymous_id=%22{anonymous_id}%22",
    }
    response = server.request("POST", "/signin/?n=signin", {**BROWSER, **headers}, body)
    assert response.status == 302, server.output()
    (session,) = [c.split(";", 1)[0] for c in response.cookies() if c.startswith("session=")]
    # The page call of the sign-in request itself already carries the new userId.
    return Visit(
        "signin", "/signin/?n=signin", anonymous_id, 302, "POST", user_id="1", name="signin"
    ), session


def test_flask_under_gunicorn(receiver: SegmentReceiver, env: dict[str, str], servers: list[Server]) -> None:
    server = start(
        servers, gunicorn("app:app", env, "--workers", "2", "--preload", chdir=ROOT / "example_flask")
    )
    visits = drive(server, [f"/?n={i}" if i % 2 else f"/products/ceramic-mug/?n={i}" for i in range(20)])
    visits.append(header_visitor(server, "/?n=header"))
    login_visit, session = flask_sign_in(server, visits[0].anonymous_id)
    visits.append(login_visit)
    signed_in = visit(
        server, "/?n=user", {"Cookie": f"{session}; ajs_anonymous_id=%22{visits[0].anonymous_id}%22"}
    )
    signed_in.anonymous_id, signed_in.user_id = visits[0].anonymous_id, "1"
    visits.append(signed_in)
    # Log-out (RESET_ON_LOGOUT): a new anonymousId cookie, already on the log-out's own
    # page call (no userId), and the visitor's next request carries it.
    both = {"Cookie": f"{session}; ajs_anonymous_id=%22{visits[0].anonymous_id}%22"}
    signout = visit(server, "/signout/?n=signout", both, method="POST", status=302)
    assert signout.anonymous_id and signout.anonymous_id != visits[0].anonymous_id
    visits.append(signout)
    after = visit(server, "/?n=after", {"Cookie": f"ajs_anonymous_id=%22{signout.anonymous_id}%22"})
    after.anonymous_id = signout.anonymous_id
    visits.append(after)
    visits.append(stream_visit(server, "/stock/feed?delay=0.3&n=stream"))
    excluded_sends_nothing(server)
    assert receiver.messages == [], "nothing is sent before shutdown with a 60 s flush interval"
    stop(server)

    pages = check_pages(receiver, visits, server.port)
    assert pages["0"]["name"] == "product" and pages["1"]["name"] == "home"
    assert pages["stream"]["name"] == "stock_feed"
    identifies = [m for m in receiver.messages if m["type"] == "identify"]
    assert len(identifies) == 1
    assert identifies[0]["userId"] == "1" and identifies[0]["anonymousId"] == visits[0].anonymous_id
    assert identifies[0]["traits"] == {"username": "alice", "email": "alice@example.com"}
    tracks = [m for m in receiver.messages if m["type"] == "track"]
    assert len(tracks) == 10 and {m["event"] for m in tracks} == {"Product Viewed"}


# ---------------------------------------------------------------------- FastAPI
def test_fastapi_under_uvicorn(receiver: SegmentReceiver, env: dict[str, str], servers: list[Server]) -> None:
    server = start(servers, uvicorn("app:app", env, app_dir=ROOT / "example_fastapi"))
    visits = drive(server, [f"/?n={i}" if i % 2 else f"/products/ceramic-mug/?n={i}" for i in range(20)])
    visits.append(header_visitor(server, "/?n=header"))
    anon = visits[0].anonymous_id
    body = urllib.parse.urlencode({"username": "alice", "password": "alice-password"}).encode()
    response = server.request(
        "POST",
        "/signin/?n=signin",
        {
            **BROWSER,
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"ajs_anonymous_id=%22{anon}%22",
        },
        body,
    )
    assert response.status == 303, server.output()
    (session,) = [c.split(";", 1)[0] for c in response.cookies() if c.startswith("session=")]
    # identify() in the view switched the request's userId before the page call was made.
    visits.append(Visit("signin", "/signin/?n=signin", anon, 303, "POST", user_id="1"))
    signed_in = visit(server, "/cart/?n=user", {"Cookie": f"{session}; ajs_anonymous_id=%22{anon}%22"})
    signed_in.anonymous_id, signed_in.user_id = anon, "1"  # from scope["user"].identity
    visits.append(signed_in)
    visits.append(stream_visit(server, "/stock/feed?delay=0.3&n=stream"))
    excluded_sends_nothing(server)
    assert receiver.messages == []
    stop(server, UVICORN_EXIT)

    pages = check_pages(receiver, visits, server.port)
    assert pages["0"]["name"] == "product" and pages["1"]["name"] == "home"
    assert pages["user"]["name"] == "cart_view" and pages["stream"]["name"] == "stock_feed"
    identifies = [m for m in receiver.messages if m["type"] == "identify"]
    assert [(m["userId"], m["anonymousId"]) for m in identifies] == [("1", anon)]
    events = sorted(m["event"] for m in receiver.messages if m["type"] == "track")
    assert events == ["Cart Viewed"] + ["Product Viewed"] * 10


# ---------------------------------------------------------------------- Starlette
def test_starlette_under_uvicorn(
    receiver: SegmentReceiver, env: dict[str, str], servers: list[Server]
) -> None:
    server = start(servers, uvicorn("starlette_app:app", env, "--workers", "2", app_dir=APPS))
    visits = drive(server, [f"/?n={i}" if i % 2 else f"/items/{i}?n={i}" for i in range(16)])
    visits.append(header_visitor(server, "/?n=header"))
    for n, token, user_id in (("named", "alice", "alice"), ("numbered", "id:42", "42")):
        v = visit(server, f"/?n={n}", {"Authorization": f"Bearer {token}"})
        v.user_id = user_id
        visits.append(v)
    visits.append(returning_visitor(server, "/boom?n=boom", "visitor-boom", status=500))
    visits.append(stream_visit(server, "/stream?delay=0.3&n=stream"))
    excluded_sends_nothing(server)
    assert receiver.messages == []
    stop(server, UVICORN_EXIT)

    pages = check_pages(receiver, visits, server.port)
    assert pages["0"]["name"] == "item" and pages["1"]["name"] == "home"
    assert pages["boom"]["properties"]["status"] == 500
    tracks = [m for m in receiver.messages if m["type"] == "track"]
    assert sorted(m["properties"]["n"] for m in tracks) == sorted(str(i) for i in range(0, 16, 2))


# ---------------------------------------------------------------------- plain WSGI
def test_plain_wsgi_under_gunicorn(
    receiver: SegmentReceiver, env: dict[str, str], servers: list[Server]
) -> None:
    server = start(servers, gunicorn("wsgi_app:app", env, "--workers", "2", chdir=APPS))
    visits = drive(server, [f"/?n={i}" for i in range(10)])
    visits.append(header_visitor(server, "/?n=header"))
    proxy_user = visit(server, "/?n=user", {"X-Auth-User": "u-99"})
    proxy_user.user_id = "u-99"
    visits.append(proxy_user)
    visits.append(visit(server, "/missing?n=missing", status=404))
    visits.append(returning_visitor(server, "/boom?n=boom", "visitor-boom", status=500))
    lines, cookie = read_stream(server, "/stream?n=stream")
    assert_not_buffered(lines)
    visits.append(Visit("stream", "/stream?n=stream", cookie or ""))
    excluded_sends_nothing(server)
    assert receiver.messages == []
    stop(server)

    pages = check_pages(receiver, visits, server.port)
    assert pages["0"]["name"] == "/", "no router: the name is the path"
    assert pages["boom"]["properties"]["status"] == 500
