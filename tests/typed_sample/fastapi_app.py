"""A FastAPI app: ``Depends(get_tracker)`` is a ``Tracker``; the middleware's keywords are checked."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from typing_extensions import assert_type

from segment_middleware import Tracker
from segment_middleware.asgi import SegmentMiddleware, get_tracker
from segment_middleware.keywords import SettingsKeywords

app = FastAPI()
app.add_middleware(
    SegmentMiddleware,
    write_key=os.environ.get("SEGMENT_WRITE_KEY"),
    exclude_paths=["/health"],
    flush_interval=1,
    plan_violations="drop",
    user_id=lambda request: None,
)

keywords: SettingsKeywords = {"host": "https://events.eu1.segmentapis.com", "anonymize_ip": True}
Starlette().add_middleware(SegmentMiddleware, **keywords)
wrapped = SegmentMiddleware(app, local_store="/tmp/events.sqlite3", max_in_flight=4)


@app.get("/items/{item_id}")
async def item(item_id: str, tracker: Annotated[Tracker, Depends(get_tracker)]) -> dict[str, str]:
    tracker.track("Item Viewed", {"item_id": item_id})
    return {"item_id": item_id}


@app.get("/cart")
async def cart(request: Request, tracker: Tracker = Depends(get_tracker)) -> dict[str, int]:  # noqa: B008
    assert_type(get_tracker(request), Tracker)
    tracker.ecommerce.cart_viewed(cart_id="c-1", products=[])
    request.state.segment.page("Cart")  # State's attributes are Any: works, unchecked
    return {"items": 0}
