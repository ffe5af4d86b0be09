"""What the sender puts on the wire, for arbitrary request facts, settings and calls.

There is one message path (``messages.finish`` builds the dict, ``messages.encode`` writes
it). These properties hold it to a reference written here from the README's description
of each field, to the plain (uncached) derivations, and to the JSON round trip: whatever
``finish`` built is exactly what the endpoint reads, also for values orjson refuses.
What each context part holds (redaction, ip, locale, campaign) is tested in
test_context.py.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segment_middleware import context as ctx
from segment_middleware.context import RequestFacts, client_ip, locale, parse_query, query_dict, redact_url
from segment_middleware.messages import Queued, encode, finish, iso_timestamp
from segment_middleware.settings import DEFAULT_REDACT, Settings
from segment_middleware.version import LIBRARY

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
url_text = st.lists(st.sampled_from([*'ab%2+=&?#/:.-_[]"\\ é\x00', "%20", "%3D", "%26"]), max_size=12).map(
    "".join
)
keys = (
    st.sampled_from(
        [
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "utm_term",
            "utm_content",
            "utm%5Fsource",
            "access_token",
            "user[email]",
            "API-Key",
            "q",
            "page",
            "ref",
            "",
            "a+b",
            "pass%77ord",
        ]
    )
    | url_text
)
values = st.sampled_from(["", "x", "a+b", "50%25", "%E2%9C%93", "%ZZ", "spring_sale"]) | url_text
pair = st.tuples(keys, st.sampled_from(["=", ""]), values).map(
    lambda p: f"{p[0]}{p[1] if p[0] else '='}{p[2]}"
)
queries = st.lists(pair | st.just(""), max_size=6).map("&".join) | url_text
referrers = (
    st.none()
    | st.just("")
    | st.builds(
        lambda base, q, frag: base + ("?" + q if q is not None else "") + frag,
        st.sampled_from(
            ["https://www.google.com/search", "HTTP://Ex.com", "http://[::1]:8/p", "http://[bad", "x"]
        ),
        st.none() | queries,
        st.sampled_from(["", "#frag", "#a?b"]),
    )
)
ips = st.sampled_from(
    ["127.0.0.1", "10.0.0.7", "203.0.113.9:5555", "[2001:db8::1]:80", "2001:db8::5", "junk", ""]
)

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | any_text
json_floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars | json_floats,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def facts_strategy(draw: Any) -> RequestFacts:
    facts = RequestFacts(
        draw(st.sampled_from(["GET", "POST", "HEAD"])),
        draw(st.sampled_from(["http", "https"])),
        draw(st.sampled_from(["shop.example.com", "localhost:8000", "é.example"])),
        "/" + draw(url_text),
        draw(queries),
        draw(referrers),
        draw(st.none() | any_text),
        draw(
            st.none() | st.sampled_from(["en-US,en;q=0.9", "*", "fr", "", "x" * 40, "de_DE;q=1"]) | any_text
        ),
        draw(st.none() | ips),
        draw(st.none() | st.lists(ips, min_size=1, max_size=3).map(", ".join)),
        draw(st.none() | st.dictionaries(st.sampled_from(["ads", "analytics", "é"]), st.booleans())),
    )
    return facts


settings_strategy = st.builds(
    lambda iq, integrations, proxies, anonymize, redact: Settings(
        write_key="k",
        host="http://127.0.0.1:9",
        include_query_params=iq,
        integrations=integrations,
        trusted_proxies=proxies,
        anonymize_ip=anonymize,
        redact_query_params=redact,
    ),
    st.booleans(),
    st.sampled_from([{}, {"All": False, "Mixpanel": True}, {"Amplitude": {"session_id": 5}}]),
    st.sampled_from([(), ("127.0.0.0/8", "10.0.0.0/8"), ("::/0",)]),
    st.booleans(),
    st.sampled_from([DEFAULT_REDACT, ("q", "ref"), ()]),
)


@st.composite
def message_strategy(draw: Any) -> tuple[dict[str, Any], tuple[int | None, str | None] | None]:
    """A queued message as core.end() (the automatic page) or a tracker call makes it."""
    if draw(st.booleans()):
        msg: dict[str, Any] = {"type": "page", "name": draw(any_text), "anonymousId": draw(any_text)}
        if draw(st.booleans()):
            msg["userId"] = draw(any_text)
        status = draw(st.none() | st.sampled_from([200, 302, 404, 500]))
        return msg, (status, draw(st.none() | any_text))
    kind = draw(st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]))
    msg = {"type": kind}
    if kind == "track":
        msg["event"] = draw(any_text)
    body = draw(st.dictionaries(any_text, json_values, max_size=4))
    msg["traits" if kind in ("identify", "group") else "properties"] = body
    if draw(st.booleans()):
        msg["userId"] = draw(any_text)
    if draw(st.booleans()):
        msg["anonymousId"] = draw(any_text)
    if draw(st.booleans()):
        msg["context"] = draw(
            st.dictionaries(
                st.sampled_from(["page", "campaign", "ip", "library", "custom", "app"]),
                st.dictionaries(any_text, json_scalars, max_size=2) | json_scalars,
                max_size=3,
            )
        )
    if draw(st.booleans()):
        msg["integrations"] = draw(st.dictionaries(st.sampled_from(["All", "Mixpanel"]), st.booleans()))
    if draw(st.booleans()):
        msg["timestamp"] = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc).isoformat()
    if draw(st.booleans()):
        msg["messageId"] = draw(any_text.filter(bool))
    return msg, None


# Facts a visitor chooses; the caps (hundreds of bytes and more) are beyond these strategies'
# sizes and held in test_scrub.py.
VISITOR_TEXT = (
    "method",
    "host",
    "path",
    "query",
    "referrer",
    "user_agent",
    "accept_language",
    "forwarded_for",
)


def _printable(text: str | None) -> str | None:
    """Without C0/C1 controls, DEL and lone surrogates."""
    return None if text is None else re.sub("[\x00-\x1f\x7f-\x9f\ud800-\udfff]", "", text)


def reference(item: Queued, s: Settings) -> dict[str, Any]:
    """The message as the README describes it, field by field, written without the
    sender's code (only the redaction and parsing helpers that test_context.py covers)."""
    f = item.facts
    name = item.name
    if f is not None:  # the README's Privacy section: visitor text without control characters
        name = _printable(name) if name == f.path else name  # the path as a name, not a route's
        f = dataclasses.replace(f, **{k: _printable(getattr(f, k)) for k in VISITOR_TEXT})
    if item.message is None:  # the request's automatic page call
        msg: dict[str, Any] = {"type": "page", "name": name, "anonymousId": item.anonymous_id}
        if item.user_id is not None:
            msg["userId"] = item.user_id
    else:
        msg = copy.deepcopy(item.message)
    context: dict[str, Any] = {"library": LIBRARY}
    if f is not None:
        words = frozenset(s.redact_query_params)
        parsed = parse_query(f.query, words) if f.query else None
        search = parsed.search if parsed else ""
        page = {
            "path": f.path,
            "url": f"{f.scheme}://{f.host}{f.path}{search}",
            "referrer": redact_url(f.referrer, words) if f.referrer else "",
            "search": search,
        }
        context["page"] = page
        ip = client_ip(f.remote_addr, f.forwarded_for, s.trusted_proxies, s.anonymize_ip)
        if ip:
            context["ip"] = ip
        if f.user_agent:
            context["userAgent"] = f.user_agent
        if locale(f.accept_language):
            context["locale"] = locale(f.accept_language)
        if parsed and parsed.campaign:
            context["campaign"] = parsed.campaign
        if f.consent is not None:
            context["consent"] = {"categoryPreferences": dict(f.consent)}
        if item.message is None:
            props = {**page, "method": f.method}
            if item.status is not None:
                props["status"] = item.status
            if item.title:
                props["title"] = item.title
            if s.include_query_params and parsed and parsed.pairs:
                props["query"] = query_dict(parsed.pairs)
            msg["properties"] = props
    for key, value in (msg.get("context") or {}).items():
        base = context.get(key)
        context[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    msg["context"] = context
    if s.integrations or "integrations" in msg:
        msg["integrations"] = {**s.integrations, **msg.get("integrations", {})}
    msg.setdefault("timestamp", iso_timestamp(item.timestamp))
    return msg


def _without_id(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "messageId"}


def _item(msg: dict[str, Any], page: Any, facts: RequestFacts | None, ts: float) -> Queued:
    if page is None:
        return Queued(copy.deepcopy(msg), ts, facts)
    name, anonymous_id, user_id = msg["name"], msg["anonymousId"], msg.get("userId")
    return Queued(None, ts, facts, name, anonymous_id, user_id, status=page[0], title=page[1])


# ---------------------------------------------------------------------- the properties
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    facts=st.none() | facts_strategy(),
    s=settings_strategy,
    messages=st.lists(message_strategy(), min_size=1, max_size=3),
    ts=st.floats(min_value=0, max_value=4e9),
)
def test_the_wire_message_is_the_documented_one(
    facts: RequestFacts | None, s: Settings, messages: list[Any], ts: float
) -> None:
    # Several messages of one request share its facts.
    for msg, page in messages:
        if page is not None and facts is None:
            continue  # the automatic page call always has its request
        item = _item(msg, page, facts, ts)
        built = finish(item, s)
        assert built is not None
        body = encode(built)
        sent = json.loads(body)
        assert sent == built  # what the store and the logs read is what was sent
        assert _without_id(sent) == _without_id(reference(_item(msg, page, facts, ts), s))
        if "messageId" not in msg:
            assert UUID4.match(sent["messageId"])
        if "timestamp" not in msg:
            assert TS.match(sent["timestamp"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=facts_strategy(), s=settings_strategy, status=st.none() | st.sampled_from([200, 404]))
def test_cached_derivations_give_what_a_fresh_derivation_gives(
    facts: RequestFacts, s: Settings, status: int | None
) -> None:
    """The ``Recurring`` caches (parsed queries, referrers, locales, query keys) change
    nothing: a request built from warm caches equals one built after clearing them."""
    item = Queued(None, 1.7e9, facts, name="n", anonymous_id="a", status=status)
    warm = finish(copy.deepcopy(item), s)
    # The warm build went through the cache, unless the query was empty once scrubbed (a
    # query of control characters only).
    assert ctx.PARSED_QUERIES or not ctx.clean_facts(facts).query
    for cached in ctx.CACHES:
        cached.clear()
    cold = finish(copy.deepcopy(item), s)
    assert warm is not None and cold is not None
    assert _without_id(warm) == _without_id(cold)


json_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(value=st.dictionaries(any_text, json_anything, max_size=4))
def test_encode_round_trips_what_orjson_refuses_too(value: dict[str, Any]) -> None:
    """Lone surrogates (possible in a badly decoded header or path) and integers past 64
    bits are not UTF-8 / orjson material; the message still goes, with JSON escapes."""
    assert json.loads(encode(value)) == value


def test_before_send_hooks_get_the_full_message_and_their_changes_are_sent() -> None:
    def hook(message: dict[str, Any]) -> dict[str, Any]:
        assert message["context"]["page"]["path"] == "/p"
        if message["type"] == "track":
            return message
        assert message["properties"]["status"] == 200
        message["context"]["page"]["path"] = "/changed"
        message["context"]["library"]["name"] = "changed"
        message["properties"]["extra"] = True
        return message

    s = Settings(write_key="k", host="http://127.0.0.1:9", before_send=(hook,))
    facts = RequestFacts("GET", "https", "h", "/p", "utm_source=x")
    page = Queued(None, 1.7e9, facts, name="p", anonymous_id="a", status=200)
    built = finish(page, s)
    assert built is not None
    sent = json.loads(encode(built))
    assert sent["context"]["page"]["path"] == "/changed" and sent["properties"]["extra"] is True
    assert sent["context"]["campaign"] == {"source": "x"}
    # The hook's in-place changes did not leak into the next message of the same request.
    track = Queued({"type": "track", "event": "E", "properties": {}, "anonymousId": "a"}, 1.7e9, facts)
    second = finish(track, s)
    assert second is not None and second["context"]["page"]["path"] == "/p"
    assert second["context"]["library"] == LIBRARY
    assert LIBRARY["name"] != "changed"


def test_a_hook_that_drops_the_message_drops_it() -> None:
    s = Settings(write_key="k", host="http://127.0.0.1:9", before_send=(lambda m: None,))
    assert finish(Queued({"type": "track", "event": "E", "anonymousId": "a"}, 1.7e9, None), s) is None
