"""Visitors for the server tests, and the check of what the receiver got for them.

Each tracked request carries ``n=<label>`` in its query string, so its page call can be
found among all the others and checked field by field against SPEC section 3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from segment_receiver import SegmentReceiver
from servers import Server

BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) pytest",
    "Accept-Language": "fr-FR,fr;q=0.8",
    "Referer": "http://127.0.0.1/elsewhere",
}


@dataclass
class Visit:
    """One tracked request and what its page call must say."""

    n: str
    target: str  # path and query as requested
    anonymous_id: str
    status: int = 200
    method: str = "GET"
    user_id: str | None = None
    name: str | None = None


def cookie_id(cookies: Iterable[str]) -> str | None:
    """The id in an ``ajs_anonymous_id=%22<id>%22`` Set-Cookie, or None when none was set."""
    values = [c.split(";", 1)[0].split("=", 1)[1] for c in cookies if c.startswith("ajs_anonymous_id=")]
    if not values:
        return None
    (value,) = values
    assert value.startswith("%22") and value.endswith("%22"), value
    return value[3:-3]


def visit(
    server: Server,
    target: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    body: bytes | None = None,
    status: int = 200,
) -> Visit:
    """A request as a new visitor (unless ``headers`` carry an id); checks its status."""
    response = server.request(method, target, {**BROWSER, **(headers or {})}, body)
    assert response.status == status, (target, response.status, server.output())
    given = cookie_id(response.cookies())
    n = parse_qs(target.split("?", 1)[1])["n"][0]
    return Visit(n, target, given or "", status, method)


def drive(server: Server, targets: Iterable[str]) -> list[Visit]:
    visits = [visit(server, target) for target in targets]
    assert all(v.anonymous_id for v in visits), "every new visitor gets a cookie"
    return visits


def page_label(message: Mapping[str, object]) -> str:
    search = message["properties"]["search"]  # type: ignore[index]
    return parse_qs(str(search)[1:]).get("n", ["?"])[0]


def check_pages(receiver: SegmentReceiver, visits: Iterable[Visit], port: int) -> dict[str, dict]:
    """Every visit's page call arrived exactly once, with the fields of SPEC 3."""
    expected = {v.n: v for v in visits}
    pages = [m for m in receiver.messages if m["type"] == "page"]
    got, want = Counter(page_label(m) for m in pages), Counter(list(expected))
    assert got == want, f"one page call per tracked request: missing {want - got}, extra {got - want}"
    dupes = [mid for mid, msgs in receiver.by_message_id().items() if len(msgs) > 1]
    assert not dupes
    by_label = {}
    for msg in pages:
        v = expected[page_label(msg)]
        props, context = msg["properties"], msg["context"]
        assert msg["anonymousId"] == v.anonymous_id
        assert msg.get("userId") == v.user_id
        if v.name is not None:
            assert msg["name"] == v.name
        assert props["status"] == v.status
        assert props["method"] == v.method
        assert props["url"] == f"http://127.0.0.1:{port}{v.target}"
        assert props["path"] == v.target.split("?", 1)[0]
        assert props["search"] == "?" + v.target.split("?", 1)[1]
        assert props["referrer"] == BROWSER["Referer"]
        assert context["ip"] == "127.0.0.1"
        assert context["userAgent"] == BROWSER["User-Agent"]
        assert context["locale"] == "fr-FR"
        assert context["page"]["url"] == props["url"]
        assert context["library"]["name"] == "segment-middleware"
        assert msg["messageId"] and msg["timestamp"].endswith("Z")
        by_label[v.n] = msg
    for request in receiver.requests:
        assert request.auth_ok
    return by_label


def excluded_sends_nothing(server: Server, path: str = "/health") -> None:
    response = server.get(path, headers=BROWSER)
    assert response.status == 200
    assert cookie_id(response.cookies()) is None
