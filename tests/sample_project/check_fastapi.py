from fastapi.testclient import TestClient
from sample_fastapi import app


def test_order_completed_is_tracked(segment_events):
    with TestClient(app) as client:
        client.post("/orders/o-1/complete")
    expected = {"order_id": "o-1", "revenue": 42.5}
    segment_events.assert_sent("track", event="Order Completed", properties=expected)
    assert len(segment_events.tracks("Order Completed")) == 1
