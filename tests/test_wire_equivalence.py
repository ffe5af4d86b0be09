"""The sender's fast wire path must send the same JSON as the dict path.

``messages.encode`` assembles each message's text from cached JSON pieces (context and
page properties once per request, the message's own small dict through the encoder);
``messages.finalize`` builds the full dict that BEFORE_SEND hooks get, and ``dumps`` of it
is what the package sent before the fast path existed. For arbitrary request facts,
settings and messages, both must give equal JSON (after ``json.loads``). What the context holds
(redaction, ip, locale, campaign) is tested in test_core_units.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segment_middleware import context as ctx
from segment_middleware._fastjson import dumps
from segment_middleware.context import RequestFacts
from segment_middleware.messages import encode, finalize, iso_timestamp, message_id, page_item
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
    )
    facts.consent = draw(
        st.none() | st.dictionaries(st.sampled_from(["ads", "analytics", "é"]), st.booleans())
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


def _twin(facts: RequestFacts) -> RequestFacts:
    """The same request facts, without the cached build."""
    twin = copy.copy(facts)
    twin.built = None
    return twin


def _without_id(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "messageId"}


# ---------------------------------------------------------------------- the properties
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    facts=st.none() | facts_strategy(),
    s=settings_strategy,
    messages=st.lists(message_strategy(), min_size=1, max_size=3),
    ts=st.floats(min_value=0, max_value=4e9),
)
def test_fast_path_sends_the_same_json_as_the_dict_path(
    facts: RequestFacts | None, s: Settings, messages: list[Any], ts: float
) -> None:
    # Several messages of one request share its facts (and so the cached context).
    fast_facts = facts
    dict_facts = None if facts is None else _twin(facts)
    for msg, page in messages:
        try:
            expected = finalize((copy.deepcopy(msg), dict_facts, ts, page), s)
        except Exception as exc:  # e.g. a bad facts value: the fast path must fail too
            try:
                encode((copy.deepcopy(msg), fast_facts, ts, page), s)
            except Exception as fast_exc:
                assert type(fast_exc) is type(exc)
                continue
            raise AssertionError(f"dict path raised {exc!r}, fast path did not") from None
        assert expected is not None
        result = encode((copy.deepcopy(msg), fast_facts, ts, page), s)
        assert result is not None
        meta, text = result
        sent = json.loads(text)
        assert _without_id(sent) == _without_id(json.loads(dumps(expected)))
        assert text.isascii()
        # The ids the store and the logs use are the ones on the wire.
        assert meta["messageId"] == sent["messageId"]
        assert meta["timestamp"] == sent["timestamp"]
        assert meta["type"] == sent["type"]
        assert meta.get("userId") == sent.get("userId")
        assert meta.get("anonymousId") == sent.get("anonymousId")
        if "messageId" not in msg:
            assert UUID4.match(sent["messageId"])
        if "timestamp" not in msg:
            assert sent["timestamp"] == iso_timestamp(ts) and TS.match(sent["timestamp"])
        if "library" not in (msg.get("context") or {}):
            assert sent["context"]["library"] == LIBRARY


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=facts_strategy(), s=settings_strategy)
def test_cached_request_context_matches_its_json_and_a_fresh_build(facts: RequestFacts, s: Settings) -> None:
    """The context dict (what BEFORE_SEND sees) and its cached JSON text (what the fast path
    sends) are one thing; a second request with the same facts, built from the caches,
    gets the same."""
    try:
        built = ctx.build(facts, s)
    except Exception as exc:
        raise AssertionError(f"context.build raised {exc!r}") from None
    assert json.loads(built.context_json) == json.loads(dumps(built.context))
    assert built.context["page"] == built.page
    assert built.page["url"].startswith(f"{facts.scheme}://{facts.host}{facts.path}")
    again = ctx.build(_twin(facts), s)
    assert again.context == built.context and json.loads(again.context_json) == built.context
    assert again.page == built.page and again.query == built.query


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    facts=facts_strategy(),
    s=settings_strategy,
    name=any_text,
    anonymous_id=any_text,
    user_id=st.none() | any_text,
    status=st.none() | st.sampled_from([200, 302, 404, 500]),
    title=st.none() | any_text,
    ts=st.floats(min_value=0, max_value=4e9),
)
def test_flat_page_item_sends_the_same_json_as_the_dict_path(
    facts: RequestFacts,
    s: Settings,
    name: str,
    anonymous_id: str,
    user_id: str | None,
    status: int | None,
    title: str | None,
    ts: float,
) -> None:
    """A request's own page call, queued as a flat tuple (messages.page_item) when nothing
    else shares its facts, is the same message as the dict form."""
    facts.consent = None
    s = Settings(
        write_key="k",
        host="http://127.0.0.1:9",
        trusted_proxies=s.trusted_proxies,
        anonymize_ip=s.anonymize_ip,
        redact_query_params=s.redact_query_params,
        include_query_params=s.include_query_params and not facts.query,
    )
    flat = page_item(_twin(facts), s, ts, status, title, name, anonymous_id, user_id)
    assert flat is not None
    msg: dict[str, Any] = {"type": "page", "name": name, "anonymousId": anonymous_id}
    if user_id is not None:
        msg["userId"] = user_id
    try:
        expected = finalize((msg, _twin(facts), ts, (status, title)), s)
    except Exception as exc:  # a bad facts value: the flat path must fail the same way
        with pytest.raises(type(exc)):
            encode(flat, s)
        return
    assert expected is not None
    result = encode(flat, s)
    assert result is not None
    meta, text = result
    sent = json.loads(text)
    assert text.isascii() and UUID4.match(sent["messageId"])
    assert _without_id(sent) == _without_id(json.loads(dumps(expected)))
    assert meta == {
        k: sent[k] for k in ("type", "name", "anonymousId", "userId", "timestamp", "messageId") if k in sent
    }
    # Not flat where the facts are shared or hooks must see a dict.
    built = _twin(facts)
    ctx.build(built, s)
    assert page_item(built, s, ts, status, title, name, anonymous_id, user_id) is None
    hooked = Settings(write_key="k", host="http://127.0.0.1:9", before_send=(lambda m: m,))
    assert page_item(_twin(facts), hooked, ts, status, title, name, anonymous_id, user_id) is None


def test_message_ids_are_unique_uuid4s() -> None:
    ids = [message_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(UUID4.match(i) for i in ids)


def test_before_send_hooks_get_the_full_message_and_their_changes_are_sent() -> None:
    def hook(message: dict[str, Any]) -> dict[str, Any]:
        assert message["context"]["page"]["path"] == "/p"
        if message["type"] == "track":
            return message
        assert message["properties"]["status"] == 200
        message["context"]["page"]["path"] = "/changed"
        message["properties"]["extra"] = True
        return message

    s = Settings(write_key="k", host="http://127.0.0.1:9", before_send=(hook,))
    facts = RequestFacts("GET", "https", "h", "/p", "utm_source=x")
    result = encode(({"type": "page", "name": "p", "anonymousId": "a"}, facts, 1.7e9, (200, None)), s)
    assert result is not None
    sent = json.loads(result[1])
    assert sent["context"]["page"]["path"] == "/changed" and sent["properties"]["extra"] is True
    assert sent["context"]["campaign"] == {"source": "x"}
    # The hook's in-place change did not leak into the next message of the same request.
    second = encode(
        ({"type": "track", "event": "E", "properties": {}, "anonymousId": "a"}, facts, 1.7e9, None), s
    )
    assert second is not None and json.loads(second[1])["context"]["page"]["path"] == "/p"
