"""``request.segment.ecommerce`` and ``.b2b`` against the table transcribed from Segment's
spec pages (``segment_middleware/spec_events.py``): every event's method, its exact event
name and property names, end to end to a receiver; the checks at the call; conversions;
DEFAULT_CURRENCY."""

from __future__ import annotations

import datetime as dt
import enum
import inspect
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import WRITE_KEY
from segment_receiver import SegmentReceiver

import segment_middleware
from segment_middleware.core import Runtime
from segment_middleware.ecommerce import accepts_int
from segment_middleware.settings import Settings
from segment_middleware.spec_events import B2B as B2B_EVENTS
from segment_middleware.spec_events import ECOMMERCE, PRODUCT, SpecEvent
from segment_middleware.spec_methods import B2B, Ecommerce
from segment_middleware.testing import capture

ROOT = Path(__file__).resolve().parent.parent
ALL = [(e, False) for e in ECOMMERCE] + [(e, True) for e in B2B_EVENTS]
SAMPLES: dict[str, Any] = {
    "string": "v",
    "number": 12.5,
    "integer": 3,
    "boolean": True,
    "array": ["a"],
    "object": {"k": "v"},
    "products": [{"product_id": "p1", "price": 9.99, "quantity": 2}],
    "date": "2026-01-01",
}
ALLOWED_TYPES = set(SAMPLES)


def snake(event: str) -> str:
    return event.lower().replace(" ", "_")


def test_the_generated_methods_are_the_tables() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "spec_methods.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_table_is_well_formed() -> None:
    methods = [e.method for e, _ in ALL]
    assert len(set(methods)) == len(methods) == 38
    for event, _ in ALL:
        assert event.method == snake(event.event)
        names = [p.name for p in event.properties]
        assert len(set(names)) == len(names) and set(event.identifying) <= set(names)
        assert {p.type for p in event.properties} <= ALLOWED_TYPES
    assert {p.name for p in PRODUCT} >= {"product_id", "sku", "name", "price", "quantity"}
    expected = {
        "Products Searched", "Product List Viewed", "Product List Filtered", "Promotion Viewed",
        "Promotion Clicked", "Product Clicked", "Product Viewed", "Product Added", "Product Removed",
        "Cart Viewed", "Checkout Started", "Checkout Step Viewed", "Checkout Step Completed",
        "Payment Info Entered", "Order Updated", "Order Completed", "Order Refunded", "Order Cancelled",
        "Coupon Entered", "Coupon Applied", "Coupon Denied", "Coupon Removed", "Product Added to Wishlist",
        "Product Removed from Wishlist", "Wishlist Product Added to Cart", "Product Shared", "Cart Shared",
        "Product Reviewed",
    }  # fmt: skip
    assert {e.event for e in ECOMMERCE} == expected
    assert {e.event for e in B2B_EVENTS} >= {
        "Account Created", "Account Deleted", "Signed Up", "Signed In", "Signed Out", "Invite Sent",
        "Account Added User", "Account Removed User", "Trial Started", "Trial Ended",
    }  # fmt: skip


@pytest.mark.parametrize(("event", "b2b"), ALL, ids=[e.method for e, _ in ALL])
def test_each_method_takes_the_spec_properties_typed(event: SpecEvent, b2b: bool) -> None:
    cls = B2B if b2b else Ecommerce
    params = inspect.signature(getattr(cls, event.method)).parameters
    names = [p for p in params if p not in ("self", "properties", "group_id")]
    assert names == [
        *event.identifying,
        *[p.name for p in event.properties if p.name not in event.identifying],
    ]
    for name in event.identifying:
        assert params[name].default is inspect.Parameter.empty
    for prop in event.properties:
        if prop.name not in event.identifying:
            assert (
                params[prop.name].kind is inspect.Parameter.KEYWORD_ONLY and params[prop.name].default is None
            )
    assert params["properties"].kind is inspect.Parameter.VAR_KEYWORD
    assert ("group_id" in params) is b2b
    assert event.event in (getattr(cls, event.method).__doc__ or "")


@pytest.mark.parametrize(("event", "b2b"), ALL, ids=[e.method for e, _ in ALL])
def test_each_string_annotation_admits_an_int_exactly_where_the_call_takes_one(
    event: SpecEvent, b2b: bool, tracker: Any
) -> None:
    """An identifier (``order_id``, ``sku``) takes an int and sends it as a string; any other
    string (``currency``, ``name``) takes text only. The generated signature says the same."""
    method = getattr(tracker.b2b if b2b else tracker.ecommerce, event.method)
    params = inspect.signature(method).parameters
    required = {"group_id": "acme"} if b2b else {}
    for prop in event.properties:
        if prop.type != "string":
            continue
        takes_int = accepts_int(prop.name)
        assert params[prop.name].annotation.removesuffix(" | None") == ("str | int" if takes_int else "str")
        given = {p.name: SAMPLES[p.type] for p in event.properties if p.name in event.identifying}
        given[prop.name] = 7
        with capture() as events:
            if takes_int:
                method(**given, **required)
                assert events[0]["properties"][prop.name] == "7"
            else:
                with pytest.raises(TypeError, match=f"{prop.name} must be a string, got int"):
                    method(**given, **required)


def _call(event: SpecEvent, b2b: bool, tracker: Any) -> dict[str, Any]:
    """Calls the event's method with a sample of every property; returns what it passed."""
    given = {p.name: SAMPLES[p.type] for p in event.properties}
    kwargs = {k: v for k, v in given.items() if k not in event.identifying}
    args = [given[k] for k in event.identifying]
    extra = {"group_id": "acme"} if b2b else {}
    getattr(tracker.b2b if b2b else tracker.ecommerce, event.method)(*args, **kwargs, **extra, my_custom="x")
    return {**given, "my_custom": "x"}


def test_every_method_sends_its_event_end_to_end(tmp_path: Path) -> None:
    with SegmentReceiver(WRITE_KEY) as receiver:
        rt = Runtime(
            Settings(write_key=WRITE_KEY, host=receiver.url, local_store=str(tmp_path / "s.sqlite3"))
        )
        tracker = rt.tracker(user_id="u-1")
        sent = {e.event: (_call(e, b2b, tracker), b2b) for e, b2b in ALL}
        assert rt.delivery.flush(15)
        received = {m["event"]: m for m in receiver.messages if m["type"] == "track"}
    assert set(received) == set(sent)
    for name, (given, b2b) in sent.items():
        message = received[name]
        assert message["properties"] == given, name
        assert message["userId"] == "u-1"
        assert message["context"].get("groupId") == ("acme" if b2b else None), name


def test_outside_a_request_too() -> None:
    with capture() as events:
        segment_middleware.tracker(user_id=9).ecommerce.order_completed("o-1", total=Decimal("10.50"))
    assert events.assert_sent("track", event="Order Completed")["properties"] == {
        "order_id": "o-1",
        "total": 10.5,
    }


class Color(enum.Enum):
    RED = "red"


@pytest.fixture
def tracker(tmp_path: Path) -> Any:
    return Runtime(Settings(local_store=str(tmp_path / "s.sqlite3"))).tracker(user_id="u")


def test_values_become_json_and_int_ids_strings(tracker: Any) -> None:
    order = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with capture() as events:
        tracker.ecommerce.order_completed(
            order,
            total=Decimal("99.90"),
            products=[{"product_id": 42, "price": Decimal("5"), "quantity": 1, "variant": Color.RED}],
            placed_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
            tags={"b", "a"},
        )
        tracker.ecommerce.product_viewed(7, price=3)
        tracker.b2b.trial_started(group_id=55, trial_start_date=dt.date(2026, 2, 1))
    order_props, viewed, trial = (m["properties"] for m in events)
    assert order_props == {
        "order_id": str(order),
        "total": 99.9,
        "products": [{"product_id": "42", "price": 5, "quantity": 1, "variant": "red"}],
        "placed_at": "2026-01-02T03:04:05+00:00",
        "tags": ["a", "b"],
    }
    assert viewed == {"product_id": "7", "price": 3}
    assert trial == {"trial_start_date": "2026-02-01"} and events[2]["context"]["groupId"] == "55"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda e: e.order_completed(None), ValueError, "order_completed(): order_id is required"),
        (lambda e: e.order_completed(""), ValueError, "order_completed(): order_id is required"),
        (lambda e: e.products_searched(query=None), ValueError, "products_searched(): query is required"),
        (lambda e: e.order_completed("o", total="12"), TypeError, "(): total must be a number, got str"),
        (lambda e: e.order_completed("o", total=True), TypeError, "total must be a number, got bool"),
        (lambda e: e.order_completed(1.5), TypeError, "(): order_id must be a string, got float"),
        (lambda e: e.order_completed("o", products={"a": 1}), TypeError, "products must be a list of"),
        (lambda e: e.order_completed("o", products=["x"]), TypeError, "products[0] must be a product dict"),
        (
            lambda e: e.order_completed("o", products=[{"price": 1}, {"price": "9"}]),
            TypeError,
            "order_completed(): products[1].price must be a number, got str",
        ),
        (lambda e: e.product_list_filtered("l", filters="x"), TypeError, "filters must be a list, got str"),
        (lambda e: e.checkout_step_viewed(step="2"), TypeError, "checkout_step_viewed(): step must be"),
        (lambda e: e.order_completed("o", nested=object()), TypeError, "object is not JSON-serializable"),
        (lambda e: e.order_completed("o", currency=978), TypeError, "currency must be a string, got int"),
        (
            lambda e: e.product_added(product_id="p", name=7),
            TypeError,
            "product_added(): name must be a string, got int",
        ),
        (
            lambda e: e.order_completed("o", products=[{"product_id": 1, "brand": 2}]),
            TypeError,
            "products[0].brand must be a string, got int",
        ),
    ],
)  # fmt: skip
def test_mistakes_raise_at_the_call_naming_the_field(
    tracker: Any, call: Any, error: type, message: str
) -> None:
    with capture() as events, pytest.raises(error) as raised:
        call(tracker.ecommerce)
    assert message in str(raised.value)
    assert len(events) == 0


def test_b2b_account_events_need_the_account(tracker: Any) -> None:
    with pytest.raises(TypeError, match="group_id"):
        tracker.b2b.account_created(account_name="Acme")  # type: ignore[call-arg]
    with capture() as events:
        tracker.b2b.signed_in(username="ann")  # a user event: the account is optional
    assert "groupId" not in events[0]["context"]


def test_default_currency_fills_the_spec_events_that_have_one(tmp_path: Path) -> None:
    rt = Runtime(Settings(local_store=str(tmp_path / "s.sqlite3"), default_currency="eur"))
    t = rt.tracker(user_id="u")
    with capture() as events:
        t.ecommerce.order_completed("o-1", total=5)
        t.ecommerce.order_refunded("o-2", currency="USD")
        t.track("Order Completed", {"order_id": "o-3"})  # the generic call is the same event
        t.ecommerce.products_searched("shoes")  # no currency in its spec
        t.track("Custom Thing")
    currencies = [m["properties"].get("currency") for m in events]
    assert currencies == ["EUR", "USD", "EUR", None, None]
