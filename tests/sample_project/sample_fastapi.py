"""A FastAPI endpoint that tracks a completed order (the README's example)."""

from typing import Annotated

from fastapi import Depends, FastAPI

from segment_middleware.asgi import SegmentMiddleware, get_tracker
from segment_middleware.tracker import Tracker

app = FastAPI()
app.add_middleware(SegmentMiddleware)


@app.post("/orders/{order_id}/complete")
def complete(order_id: str, tracker: Annotated[Tracker, Depends(get_tracker)]) -> dict[str, bool]:
    tracker.track("Order Completed", {"order_id": order_id, "revenue": 42.5})
    return {"ok": True}
