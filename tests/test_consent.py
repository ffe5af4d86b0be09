"""Consent per category: EVENT_CATEGORIES / PAGE_CATEGORY against each request's CONSENT
answer, on every path a message takes (a tracker's calls, the automatic page call, a
background job's calls, every adapter), and the ready cookie readers.

The matrix checks what is stored or received, never the decision function alone: a refusal
must mean "not sent and counted blocked", and a grant "sent as before".
"""

from __future__ import annotations

import gc
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from units import QUICK, facts, stored

import segment_middleware
from segment_middleware import consent
from segment_middleware.context import carried_facts, facts_from_carried
from segment_middleware.core import Runtime
from segment_middleware.settings import Settings, SettingsError

EVENTS = {"Order *": "advertising", "Product Viewed": "analytics", "Signed Up": ["analytics", "crm"]}
CATEGORIES = ("advertising", "analytics", "crm")


def _answer(request: Any) -> Any:
    """CONSENT for the unit runtime: the request object is the answer itself."""
    if isinstance(request, Exception):
        raise request
    return request


def _runtime(store_path: str, **extra: Any) -> Runtime:
    base: dict[str, Any] = {
        "local_store": store_path,
        "flush_interval": 0.05,
        "consent": _answer,
        "event_categories": EVENTS,
        "page_category": "analytics",
    }
    return Runtime(Settings.from_sources({**base, **extra}, environ={}))


@pytest.fixture
def runtime(store_path: str) -> Iterator[Runtime]:
    rt = _runtime(store_path)
    yield rt
    rt.delivery.shutdown(2)


def _visit(rt: Runtime, answer: Any) -> Any:
    """One request whose CONSENT answer is ``answer``: its tracker."""
    return rt.begin(answer, facts(), None, None)


def _sent(rt: Runtime) -> list[tuple[str, str | None]]:
    return [(m["type"], m.get("event")) for m in stored(rt)]


# ---------------------------------------------------------------------- the matrix
@pytest.mark.parametrize(
    "granted",
    [set(combo) for n in range(len(CATEGORIES) + 1) for combo in itertools.combinations(CATEGORIES, n)],
    ids=lambda g: "+".join(sorted(g)) or "none",
)
def test_each_call_is_sent_only_when_its_categories_are_granted(runtime: Runtime, granted: set[str]) -> None:
    answer = {c: c in granted for c in CATEGORIES}
    before = runtime.delivery.stats()["blocked"]
    t = _visit(runtime, answer)
    t.track("Order Completed", {"order_id": "1"})  # glob -> advertising
    t.track("Product Viewed")  # exact -> analytics
    t.track("Signed Up")  # analytics AND crm
    t.track("Unlisted Event")  # no category: always sent
    t.page("Pricing")  # PAGE_CATEGORY
    t.screen("Home")  # PAGE_CATEGORY
    t.identify("u1", {"plan": "pro"})  # no category
    runtime.end(t, 200, "/cart")  # the automatic page call: PAGE_CATEGORY
    expected: list[tuple[str, str | None]] = (
        [("track", "Order Completed")] if "advertising" in granted else []
    )
    expected += [("track", "Product Viewed")] if "analytics" in granted else []
    expected += [("track", "Signed Up")] if {"analytics", "crm"} <= granted else []
    expected += [("track", "Unlisted Event")]
    expected += [("page", None), ("screen", None)] if "analytics" in granted else []
    expected += [("identify", None)]
    expected += [("page", None)] if "analytics" in granted else []
    assert _sent(runtime) == expected
    assert runtime.delivery.stats()["blocked"] - before == 8 - len(expected)


@pytest.mark.parametrize("answer", [None, {}, {"analytics": "yes"}, {"analytics": 1}], ids=repr)
def test_no_answer_or_anything_but_true_refuses(runtime: Runtime, answer: Any) -> None:
    t = _visit(runtime, answer)
    t.track("Product Viewed")
    t.track("Unlisted Event")
    runtime.end(t, 200, "/")
    assert _sent(runtime) == [("track", "Unlisted Event")]


def test_a_consent_hook_that_raises_refuses_every_categorised_call(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    t = _visit(runtime, RuntimeError("consent service down"))
    t.track("Product Viewed")
    t.track("Unlisted Event")
    runtime.end(t, 200, "/")
    assert _sent(runtime) == [("track", "Unlisted Event")]
    assert "CONSENT raised RuntimeError" in caplog.text


def test_sent_messages_still_carry_the_answer(runtime: Runtime) -> None:
    t = _visit(runtime, {"analytics": True, "advertising": False})
    t.track("Product Viewed")
    (message,) = stored(runtime)
    assert message["context"]["consent"] == {"categoryPreferences": {"analytics": True, "advertising": False}}


def test_outside_a_request_there_is_no_visitor_to_ask(runtime: Runtime) -> None:
    runtime.tracker(user_id="u1").track("Order Completed")
    assert _sent(runtime) == [("track", "Order Completed")]


def test_a_background_job_keeps_its_request_s_answer(runtime: Runtime) -> None:
    """A job's facts travel through a broker (carried_facts) and are made again."""
    request_facts = facts(consent={"analytics": True, "advertising": False})
    job_facts = facts_from_carried(json.loads(json.dumps(carried_facts(request_facts, runtime.settings))))
    job = runtime.tracker(user_id="u1", facts=job_facts)
    job.track("Order Completed")
    job.track("Product Viewed")
    assert _sent(runtime) == [("track", "Product Viewed")]


def test_without_consent_setting_categories_decide_nothing(store_path: str) -> None:
    rt = _runtime(store_path, consent=None)
    try:
        assert rt.settings.consent_categories is None
        t = _visit(rt, None)
        t.track("Order Completed")
        rt.end(t, 200, "/")
        assert _sent(rt) == [("track", "Order Completed"), ("page", None)]
    finally:
        rt.delivery.shutdown(2)


def test_refused_calls_never_reach_before_send(store_path: str) -> None:
    seen: list[str] = []

    def hook(message: dict[str, Any]) -> dict[str, Any]:
        seen.append(message.get("event") or message["type"])
        return message

    rt = _runtime(store_path, before_send=[hook])
    try:
        t = _visit(rt, {"analytics": True})
        t.track("Order Completed")
        t.track("Product Viewed")
        assert _sent(rt) == [("track", "Product Viewed")]
        assert seen == ["Product Viewed"]
    finally:
        rt.delivery.shutdown(2)


def test_exact_names_win_over_globs_and_globs_go_in_order(store_path: str) -> None:
    rt = _runtime(
        store_path,
        event_categories={"Order *": "advertising", "Order Completed": "analytics", "*": "crm"},
    )
    try:
        rules = rt.settings.consent_categories
        assert rules is not None
        assert rules.of("track", "Order Completed") == ("analytics",)
        assert rules.of("track", "Order Refunded") == ("advertising",)
        assert rules.of("track", "order refunded") == ("crm",)  # globs are case-sensitive
        assert rules.of("identify", None) == () and rules.of("page", None) == ("analytics",)
    finally:
        rt.delivery.shutdown(2)


@given(st.text(max_size=300), st.dictionaries(st.sampled_from(CATEGORIES), st.booleans()))
@QUICK
def test_any_event_name_gets_a_decision_and_never_raises(event: str, answer: dict[str, bool]) -> None:
    rules = Settings(consent=_answer, event_categories=EVENTS).consent_categories  # type: ignore[arg-type]
    assert rules is not None
    needed = rules.of("track", event)
    refused = rules.refuses("track", event, answer)
    assert set(refused) == {c for c in needed if not answer.get(c)}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"": "ads"}, "keys must be event names"),
        ({"Order *": ""}, "'Order \\*' must map to a category"),
        ({"Order *": []}, "'Order \\*' must map to a category"),
        ({"Order *": 3}, "'Order \\*' must map to a category"),
        (["Order *"], "must be a dict"),
    ],
)
def test_bad_event_categories_fail_at_start(value: Any, match: str) -> None:
    with pytest.raises(SettingsError, match=f"^SEGMENT\\['EVENT_CATEGORIES'\\]: {match}"):
        Settings.from_sources(framework={"event_categories": value}, style="django", environ={})


def test_page_category_takes_a_name_or_a_list() -> None:
    assert Settings(page_category="analytics").page_category == ("analytics",)  # type: ignore[arg-type]
    assert Settings(page_category=["a", "b"]).page_category == ("a", "b")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match=r"^page_category: "):
        Settings(page_category=[""])  # type: ignore[arg-type]


def test_the_collection_routes_follow_the_server_s_answer(store_path: str) -> None:
    """analytics.js events posted to the first-party routes: the server's CONSENT answer
    decides, whatever consent the browser's body claims."""
    from types import SimpleNamespace

    from segment_middleware.collect import CollectRequest, handle
    from segment_middleware.testing import capture

    rt = _runtime(store_path, consent=lambda request: {"analytics": True, "advertising": False})
    headers = {"cookie": "ajs_anonymous_id=anon-1", "host": "shop.example"}

    def post(route: str, body: dict[str, Any]) -> int:
        call = CollectRequest(
            method="POST",
            route=route,
            headers=headers,
            body=json.dumps(body).encode(),
            scheme="https",
            path=f"/segment/{route}",
            query="",
            remote_addr="10.0.0.5",
            user_id=lambda: None,
            request=SimpleNamespace(headers=headers),
        )
        return handle(rt, call).status

    claim = {"consent": {"categoryPreferences": {"advertising": True}}}
    try:
        with capture() as events:
            assert post("v1/t", {"event": "Order Completed", "context": claim}) == 200
            assert post("v1/t", {"event": "Product Viewed"}) == 200
            assert post("v1/p", {"name": "Home"}) == 200
        assert [(m["type"], m.get("event")) for m in events] == [("track", "Product Viewed"), ("page", None)]
    finally:
        rt.delivery.shutdown(2)


# ---------------------------------------------------------------------- cookie readers
ONETRUST = (
    "isGpcEnabled=0&datestamp=Mon+Dec+07+2026+09%3A00%3A00+GMT%2B0100&version=202409.1.0"
    "&isIABGlobal=false&hosts=&consentId=0c5d6e8a&interactionCount=1&landingPath=NotLandingPage"
    "&groups=C0001%3A1%2CC0002%3A1%2CC0003%3A0%2CC0004%3A0&AwaitingReconsent=false"
)


class _DjangoLike:
    def __init__(self, cookies: Mapping[str, str]) -> None:
        self.COOKIES = dict(cookies)


class _StarletteLike:
    def __init__(self, cookies: Mapping[str, str]) -> None:
        self.cookies = dict(cookies)


def _requests(name: str, value: str) -> list[Any]:
    """The same cookie on each shape of request an adapter hands CONSENT."""
    header = f"other=1; {name}={value}; last=2"
    return [
        _DjangoLike({name: value}),
        _StarletteLike({name: value}),
        {"wsgi.version": (1, 0), "HTTP_COOKIE": header},
        {"type": "http", "headers": [(b"host", b"x"), (b"cookie", b"a=b"), (b"cookie", header.encode())]},
    ]


@pytest.mark.parametrize(
    "shape", range(4), ids=["django", "werkzeug-starlette", "wsgi-environ", "asgi-scope"]
)
def test_onetrust_reads_the_groups_on_every_request_shape(shape: int) -> None:
    request = _requests("OptanonConsent", ONETRUST)[shape]
    assert consent.onetrust()(request) == {"C0001": True, "C0002": True, "C0003": False, "C0004": False}
    named = consent.onetrust({"C0002": "analytics", "C0004": "advertising"})(request)
    assert named == {"C0001": True, "analytics": True, "C0003": False, "advertising": False}


def test_onetrust_without_a_cookie_gives_no_answer_unless_defaults() -> None:
    assert consent.onetrust()(_DjangoLike({})) is None
    assert consent.onetrust(defaults={"C0002": True})(_DjangoLike({})) == {"C0002": True}
    partial = "groups=C0001%3A1"
    read = consent.onetrust({"C0002": "analytics"}, defaults={"analytics": True})
    assert read(_DjangoLike({"OptanonConsent": partial})) == {"analytics": True, "C0001": True}


@pytest.mark.parametrize(
    "value",
    [
        json.dumps({"analytics": True, "advertising": False, "note": "x", "n": 5}),
        quote(json.dumps({"analytics": True, "advertising": False})),
        '"' + json.dumps({"analytics": True, "advertising": 0}).replace('"', "'") + '"',  # not JSON
    ],
    ids=["plain", "url-encoded", "not-json"],
)
def test_json_cookie_reads_booleans_only(value: str) -> None:
    read = consent.json_cookie("consent")
    answer = read(_DjangoLike({"consent": value}))
    if "'" in value:
        assert answer is None
    else:
        assert answer == {"analytics": True, "advertising": False}


def test_json_cookie_nested_key_and_defaults() -> None:
    value = json.dumps({"v": 2, "consent": {"categories": {"analytics": 1, "ads": 0}}})
    read = consent.json_cookie("prefs", key=["consent", "categories"], defaults={"necessary": True})
    assert read(_StarletteLike({"prefs": value})) == {"necessary": True, "analytics": True, "ads": False}
    assert read(_StarletteLike({})) == {"necessary": True}
    assert consent.json_cookie("prefs", key="missing")(_StarletteLike({"prefs": value})) is None


@given(st.text(max_size=5000), st.sampled_from(range(4)))
@QUICK
def test_readers_never_raise_on_what_the_browser_sent(raw: str, shape: int) -> None:
    for name, read in (("OptanonConsent", consent.onetrust()), ("c", consent.json_cookie("c"))):
        request = _requests(name, raw)[shape]
        answer = read(request)
        assert answer is None or all(isinstance(v, bool) for v in answer.values())


def test_the_ready_onetrust_reader_is_a_dotted_path() -> None:
    s = Settings(consent="segment_middleware.consent.onetrust_groups")  # type: ignore[arg-type]
    assert s.consent is consent.onetrust_groups
    assert s.consent(_DjangoLike({"OptanonConsent": "groups=C0002%3A0"})) == {"C0002": False}


def test_readers_take_unknown_request_shapes_as_no_cookie() -> None:
    assert consent.request_cookie(object(), "c") is None
    assert consent.request_cookie({"type": "lifespan"}, "c") is None
    assert consent.onetrust()(None) is None


# ---------------------------------------------------------------------- every adapter
# (adapters skips this module without their frameworks, and sets Django up)
from adapters import ADAPTERS, running, settle  # noqa: E402
from helpers import WRITE_KEY  # noqa: E402
from segment_receiver import SegmentReceiver  # noqa: E402

_GROUPS = {
    "both": "C0002%3A1%2CC0004%3A1",
    "analytics": "C0002%3A1%2CC0004%3A0",
    "ads": "C0002%3A0%2CC0004%3A1",
}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_every_adapter_sends_what_the_onetrust_cookie_grants(
    adapter: str, receiver: SegmentReceiver, store_path: str, tmp_path: Path
) -> None:
    """``/track`` sends the page call (PAGE_CATEGORY analytics) and "Matrix Event"
    (advertising, by glob); the OneTrust cookie decides each. The last visit grants both:
    it is the marker that everything before it was settled."""
    config = {
        "write_key": WRITE_KEY,
        "host": receiver.url,
        "local_store": store_path,
        "flush_interval": 0.05,
        "consent": consent.onetrust({"C0002": "analytics", "C0004": "advertising"}),
        "event_categories": {"Matrix *": "advertising"},
        "page_category": "analytics",
    }
    gc.collect()  # stats() sums the live pipelines: earlier tests' must not die during this one
    before = segment_middleware.stats()["blocked"]
    with running(adapter, config) as app:
        for marker in ("analytics", "ads", "none", "both"):
            headers = {} if marker == "none" else {"Cookie": f"OptanonConsent=groups={_GROUPS[marker]}"}
            assert app.get(f"/track?n={marker}", headers).status == 200
        settle()
    got = [(m["type"], m["context"]["page"]["search"].removeprefix("?n=")) for m in receiver.messages]
    assert sorted(got) == sorted(
        [("page", "analytics"), ("track", "ads"), ("page", "both"), ("track", "both")]
    )
    assert segment_middleware.stats()["blocked"] - before == 4


def _consent(request: object) -> dict[str, bool]:
    return {"analytics": True}


def test_categories_without_consent_are_a_warning_at_start_and_in_django_checks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """EVENT_CATEGORIES without CONSENT holds nothing back: said once when the runtime
    starts (segment.W102), and by ``manage.py check``; not said when CONSENT is set."""
    from segment_middleware import logs
    from segment_middleware.settings import advice

    lone = Settings(event_categories={"Order *": "marketing"}, local_store=str(tmp_path / "a.sqlite3"))
    assert [p.id for p in advice(lone)] == ["segment.W102"]
    assert advice(lone.replace(consent=_consent)) == []
    assert advice(Settings(page_category="analytics", local_store=str(tmp_path / "b.sqlite3")))[0].id == (
        "segment.W102"
    )
    monkeypatch.setattr(logs, "_announced", set())
    with caplog.at_level("WARNING", logger="segment_middleware"):
        logs.announce(lone)
        logs.announce(lone)  # once per process and destination
    said = [r.getMessage() for r in caplog.records if "segment.W102" in r.getMessage()]
    assert len(said) == 1 and "CONSENT is not" in said[0]
