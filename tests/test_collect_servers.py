"""The collection routes (analytics.js's ``v1/...``, the JSON calls, ``flush``) under real
servers, one app per framework: Django under gunicorn and uvicorn, Flask and a plain WSGI
app under gunicorn, FastAPI under uvicorn (apps in ``tests/apps/collect_apps.py`` and
``tests/apps/collect_dj``).

Each server runs with a 60 s flush interval: what the receiver has after SIGTERM is what
the routes queued. Every accepted event must arrive once, with the server's userId (never
the body's), the cookie's anonymousId and the server's idea of the IP; every refused one
(bad JSON, wrong types, too large, wrong write key, another origin, over the rate limit,
GPC) never; and no request to the mount makes a page call of its own.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver
from servers import ROOT, Response, Server, gunicorn, uvicorn

APPS = ROOT / "tests" / "apps"
PARTNER = "https://partner.example"
BURST = 12
UA = "Mozilla/5.0 (X11; Linux x86_64) collect-test"
PAGE = "http://127.0.0.1/pricing?utm_source=news"  # the page the calls are made from

Start = Callable[[dict[str, str]], Server]
FRAMEWORKS: dict[str, tuple[str, Start]] = {
    "django-gunicorn": ("django", lambda env: gunicorn("collect_dj.wsgi:application", env, chdir=APPS)),
    "django-uvicorn": ("django", lambda env: uvicorn("collect_dj.asgi:application", env, app_dir=APPS)),
    "flask-gunicorn": ("flask", lambda env: gunicorn("collect_apps:flask_app", env, chdir=APPS)),
    "fastapi-uvicorn": ("fastapi", lambda env: uvicorn("collect_apps:fastapi_app", env, app_dir=APPS)),
    "wsgi-gunicorn": (
        "wsgi",
        lambda env: gunicorn("collect_apps:wsgi_app", env, "--worker-class", "gthread", chdir=APPS),
    ),
}


def start(
    framework: str, receiver: SegmentReceiver, tmp_path: Path, servers: list[Server], **extra: str
) -> Server:
    app, make = FRAMEWORKS[framework]
    env = {
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": receiver.url,
        "SEGMENT_LOCAL_STORE": str(tmp_path / "store.sqlite3"),
        "TEST_TMP": str(tmp_path),
        "TEST_COLLECT_APP": app,
        "TEST_RATE_LIMIT": f"1/h burst {BURST}",
        "TEST_ORIGINS": PARTNER,
        "DJANGO_SETTINGS_MODULE": "collect_dj.settings",
        **extra,
    }
    server = make(env)
    servers.append(server)
    server.wait_ready()
    return server


class Client:
    """Posts as a browser on the site would: its UA, the page as Referer, its cookies."""

    def __init__(self, server: Server) -> None:
        self.server = server
        health = server.get("/health")
        assert health.status == 200, server.output()
        csrf = [c.split(";", 1)[0] for c in health.cookies() if c.startswith("csrftoken=")]
        self.csrf = csrf[0] if csrf else None  # Django's, for the JSON calls

    def post(
        self,
        route: str,
        body: Any,
        *,
        anonymous_id: str | None = None,
        user: str | None = None,
        json_call: bool = False,
        csrf: bool = True,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        cookies = []
        sent = {"User-Agent": UA, "Referer": PAGE}
        if anonymous_id is not None:
            cookies.append(f"ajs_anonymous_id={anonymous_id}")  # analytics-next's raw form
        if json_call:
            sent["Content-Type"] = "application/json"
            if csrf and self.csrf is not None:
                cookies.append(self.csrf)
                sent["X-CSRFToken"] = self.csrf.split("=", 1)[1]
        else:
            sent["Content-Type"] = "text/plain;charset=UTF-8"
        if cookies:
            sent["Cookie"] = "; ".join(cookies)
        if user is not None:
            sent["X-Test-User"] = user
        sent.update(headers or {})
        data = raw if raw is not None else json.dumps(body).encode()
        return self.server.request("POST", f"/segment/{route}", sent, data)


def browser_event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event as analytics-next's Segment.io plugin posts it (normalize.ts)."""
    event = {
        "type": kind,
        "anonymousId": "body-anonymous-id",
        "userId": "someone-else",
        "context": {
            "page": {
                "path": "/pricing",
                "url": PAGE,
                "title": "Pricing",
                "referrer": "",
                "search": "?utm_source=news",
            },
            "library": {"name": "analytics.js", "version": "npm:next-1.81.0"},
            "userAgent": "spoofed agent",
            "ip": "6.6.6.6",
            "locale": "fr-FR",
        },
        "integrations": {},
        "messageId": f"ajs-next-{kind}-{fields.get('event') or fields.get('name') or ''}",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "sentAt": "2026-01-01T00:00:00.100Z",
        "writeKey": WRITE_KEY,
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
    }
    event.update(fields)
    return event


def ok(response: Response, status: int = 200) -> dict[str, Any]:
    assert response.status == status, (response.status, response.body)
    return json.loads(response.body) if response.body else {}


def refused(response: Response, status: int, field: str | None = None) -> None:
    assert response.status == status, (response.status, response.body)
    if field is not None:
        assert json.loads(response.body)["field"] == field, response.body


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_collection_routes_under_a_real_server(
    framework: str, receiver: SegmentReceiver, tmp_path: Path, servers: list[Server]
) -> None:
    server = start(framework, receiver, tmp_path, servers)
    app = FRAMEWORKS[framework][0]
    c = Client(server)

    # --- analytics.js, each call type: userId from the server, anonymousId from the cookie
    ok(c.post("v1/t", browser_event("track", event="Clicked", properties={"n": 1}), anonymous_id="anon-a"))
    ok(
        c.post(
            "v1/p",
            browser_event("page", name="Pricing", properties={"path": "/pricing"}),
            anonymous_id="anon-a",
        )
    )
    ok(c.post("v1/i", browser_event("identify", traits={"plan": "pro"}), anonymous_id="anon-a", user="42"))
    ok(
        c.post(
            "v1/g", browser_event("group", groupId="acme", traits={"n": 3}), anonymous_id="anon-a", user="42"
        )
    )
    ok(
        c.post(
            "v1/a", browser_event("alias", previousId="someone-elses-id"), anonymous_id="anon-a", user="42"
        )
    )
    ok(c.post("v1/s", browser_event("screen", name="Home"), anonymous_id="anon-a"))
    batch = [browser_event("track", event=f"Batched {i}") for i in range(3)]
    ok(
        c.post(
            "v1/b",
            {"batch": batch, "sentAt": "2026-01-01T00:00:00.100Z", "writeKey": WRITE_KEY},
            anonymous_id="anon-b",
        )
    )
    # no cookie: the body's anonymousId; the write key as HTTP Basic (newer analytics-next)
    no_key = browser_event("track", event="Cookieless")
    del no_key["writeKey"]
    basic = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    ok(c.post("v1/t", no_key, headers={"Authorization": basic}))

    # --- the JSON calls (Django: with its CSRF token)
    j = {"anonymous_id": "anon-j", "json_call": True}
    ok(c.post("track", {"event": "Json Tracked", "properties": {"sku": "X"}, "userId": "someone-else"}, **j))
    ok(c.post("identify", {"traits": {"email": "a@example.com"}}, user="42", **j))
    ok(c.post("page", {"name": "Json Page", "category": "Docs"}, **j))
    ok(c.post("group", {"groupId": 7, "traits": {"name": "Acme"}}, user="42", **j))
    ok(c.post("alias", {}, user="42", **j))

    # --- refused: nothing of these may arrive
    refused(c.post("v1/t", None, anonymous_id="anon-x", raw=b'{"type": "track", "event": '), 400, "body")
    refused(
        c.post("v1/t", browser_event("track", event="Bad Props", properties="x"), anonymous_id="anon-x"),
        400,
        "properties",
    )
    refused(c.post("v1/t", browser_event("track", event=["Bad Name"]), anonymous_id="anon-x"), 400, "event")
    refused(c.post("v1/g", browser_event("group", groupId=None), anonymous_id="anon-x"), 400, "groupId")
    refused(
        c.post(
            "v1/b",
            {"batch": [browser_event("track", event="Bad Batch"), {"type": "nope"}], "writeKey": WRITE_KEY},
            anonymous_id="anon-x",
        ),
        400,
        "batch[1].type",
    )
    refused(c.post("track", {"event": "Bad Field", "colour": "red"}, **j), 400, "colour")
    refused(
        c.post(
            "v1/t",
            browser_event("track", event="Too Big", properties={"x": "y" * 40_000}),
            anonymous_id="anon-x",
        ),
        413,
    )
    near = browser_event("track", event="Too Big Enriched", properties={"x": "y" * (32 * 1024 - 700)})
    assert len(json.dumps(near)) < 32 * 1024
    refused(c.post("v1/t", near, anonymous_id="anon-x"), 413)
    big_batch = [browser_event("track", event="Big Batch", properties={"x": "y" * 20_000}) for _ in range(30)]
    refused(c.post("v1/b", {"batch": big_batch, "writeKey": WRITE_KEY}, anonymous_id="anon-x"), 413)
    refused(
        c.post("v1/t", browser_event("track", event="Wrong Key", writeKey="nope"), anonymous_id="anon-x"),
        401,
        "writeKey",
    )
    missing = browser_event("track", event="No Key")
    del missing["writeKey"]
    refused(c.post("v1/t", missing, anonymous_id="anon-x"), 401, "writeKey")
    refused(c.post("alias", {}, **j), 400, "userId")  # an anonymous visitor has no one to alias to
    if app == "django":  # Django's own CSRF rules hold for the JSON calls
        refused(c.post("track", {"event": "No Csrf"}, csrf=False, **j), 403)
    else:  # a form post (no preflight) cannot pass for a JSON call
        refused(c.post("track", {"event": "Form Post"}, anonymous_id="anon-j"), 415)

    # --- origins: another site's page is refused, a listed one answered with CORS headers
    refused(
        c.post(
            "v1/t",
            browser_event("track", event="Evil Origin"),
            anonymous_id="anon-x",
            headers={"Origin": "https://evil.example"},
        ),
        403,
    )
    partner = c.post(
        "v1/t",
        browser_event("track", event="Partner Origin"),
        anonymous_id="anon-p",
        headers={"Origin": PARTNER},
    )
    ok(partner)
    assert {k.lower(): v for k, v in partner.headers}["access-control-allow-origin"] == PARTNER
    same = c.post(
        "v1/t",
        browser_event("track", event="Same Origin"),
        anonymous_id="anon-p",
        headers={"Origin": f"http://127.0.0.1:{server.port}"},
    )
    ok(same)

    # --- GPC: answered, not sent
    ok(
        c.post(
            "v1/t", browser_event("track", event="Gpc Event"), anonymous_id="anon-g", headers={"Sec-GPC": "1"}
        )
    )

    # --- the rate limit: a visitor's burst passes, the next event is 429 with Retry-After
    ok(
        c.post(
            "v1/b",
            {
                "batch": [browser_event("track", event=f"Burst {i}") for i in range(BURST)],
                "writeKey": WRITE_KEY,
            },
            anonymous_id="anon-r",
        )
    )
    limited = c.post("v1/t", browser_event("track", event="Over The Limit"), anonymous_id="anon-r")
    refused(limited, 429)
    retry_after = {k.lower(): v for k, v in limited.headers}["retry-after"]
    assert int(retry_after) >= 1
    ok(c.post("v1/t", browser_event("track", event="Another Visitor"), anonymous_id="anon-other"))

    # --- flush: staff only
    refused(c.post("flush", {}, user="42", **j), 403)
    assert ok(c.post("flush", {}, user="staff:1", **j))["flushed"] is True
    stats = json.loads(server.get("/stats").body)
    assert stats["limited"] == 1, stats

    assert server.stop() in (0, -15), server.output()
    messages = receiver.messages
    by_event = {
        m.get("event") or m.get("name") or m["type"]: m
        for m in messages
        if m["type"] != "page" or m.get("name") != "stats"
    }
    names = [m.get("event") for m in messages if m["type"] == "track"]

    expected_tracks = {
        "Clicked",
        "Batched 0",
        "Batched 1",
        "Batched 2",
        "Cookieless",
        "Json Tracked",
        "Partner Origin",
        "Same Origin",
        "Another Visitor",
        *(f"Burst {i}" for i in range(BURST)),
    }
    assert sorted(names) == sorted(expected_tracks), names  # each once; nothing refused arrived
    own_pages = [m for m in messages if m["type"] == "page" and "method" in m.get("properties", {})]
    for m in messages:
        assert len(json.dumps(m).encode()) <= 32 * 1024
        path = (m.get("context") or {}).get("page", {}).get("path", "")
        assert not path.startswith("/segment"), ("a request to the mount made a page call", m)
        assert m.get("userId") in (None, "42"), m  # never the body's
        if m.get("event") != "Cookieless":
            assert m.get("anonymousId") != "body-anonymous-id", m  # the cookie's wins
        assert m["context"]["ip"] == "127.0.0.1", m["context"]  # not the body's 6.6.6.6
        if m not in own_pages:
            assert m["context"]["userAgent"] == UA, m["context"]  # the request's, not the body's

    clicked = by_event["Clicked"]
    assert "userId" not in clicked and clicked["anonymousId"] == "anon-a"
    assert clicked["messageId"] == "ajs-next-track-Clicked"
    assert clicked["context"]["page"]["title"] == "Pricing" and clicked["context"]["locale"] == "fr-FR"
    assert clicked["context"]["library"]["name"] == "analytics.js"
    assert clicked["_metadata"]["bundled"] == ["Segment.io"]
    assert not clicked["timestamp"].startswith("2026-01-01"), "the browser's clock is corrected by sentAt"
    pricing = by_event["Pricing"]
    assert (
        pricing["type"] == "page" and pricing["properties"]["path"] == "/pricing" and "userId" not in pricing
    )
    identify = next(m for m in messages if m["type"] == "identify" and m["traits"] == {"plan": "pro"})
    assert identify["userId"] == "42" and identify["anonymousId"] == "anon-a"
    group = next(m for m in messages if m["type"] == "group" and m["groupId"] == "acme")
    assert group["userId"] == "42"
    aliases = [m for m in messages if m["type"] == "alias"]
    assert sorted((a["previousId"], a["userId"]) for a in aliases) == [("anon-a", "42"), ("anon-j", "42")]
    screen = by_event["Home"]
    assert screen["type"] == "screen" and "userId" not in screen
    assert (
        by_event["Cookieless"]["anonymousId"] == "body-anonymous-id"
        and "userId" not in by_event["Cookieless"]
    )
    json_track = by_event["Json Tracked"]
    assert json_track["anonymousId"] == "anon-j" and "userId" not in json_track
    assert json_track["context"]["page"]["path"] == "/pricing", "a JSON call's page is the Referer"
    assert json_track["context"]["campaign"] == {"source": "news"}
    json_identify = next(
        m for m in messages if m["type"] == "identify" and m["traits"] == {"email": "a@example.com"}
    )
    assert json_identify["userId"] == "42"
    json_page = by_event["Json Page"]
    assert json_page["category"] == "Docs" and json_page["anonymousId"] == "anon-j"
    json_group = next(m for m in messages if m["type"] == "group" and m["groupId"] == "7")
    assert json_group["traits"] == {"name": "Acme"}
    # the only page calls of the middleware are those of /health and /stats
    assert {m["properties"]["path"] for m in own_pages} <= {"/health", "/stats"}, own_pages
