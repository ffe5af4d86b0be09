"""The example shop on FastAPI: the same pages as example_django, tracked by SegmentMiddleware.

SegmentMiddleware is a pure ASGI middleware added last, so it wraps the session and
authentication middleware and reads ``scope["user"]`` (Starlette's AuthenticationMiddleware)
for the userId. Views get the request's tracker through the ``get_tracker`` dependency (or
``request.state.segment``). There is no log-in signal in Starlette, so the sign-in view sends
the identify itself.

Run it with ``./dev example fastapi`` (embedded store, no Segment account needed) or
``uvicorn --app-dir example_fastapi app:app``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection

from segment_middleware import Tracker
from segment_middleware.asgi import SegmentMiddleware, collect_router, get_tracker
from segment_middleware.snippet import segment_snippet

# slug -> name, sku, price, in stock
PRODUCTS = {
    "espresso-beans": ("Espresso Beans 1kg", "COF-ESP-1000", 24.50, True),
    "pour-over-kettle": ("Pour-over Kettle", "KIT-KTL-001", 39.00, True),
    "ceramic-mug": ("Ceramic Mug", "KIT-MUG-350", 12.00, True),
    "hand-grinder": ("Hand Grinder", "KIT-GRD-002", 89.90, False),
}
USERS = {"alice": ("1", "alice@example.com", "alice-password")}


class ShopUser(SimpleUser):
    """``identity`` is what SegmentMiddleware sends as userId."""

    def __init__(self, username: str) -> None:
        super().__init__(username)
        self.id, self.email, _ = USERS[username]

    @property
    def identity(self) -> str:
        return self.id


class SessionBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        name = conn.session.get("user")
        if name not in USERS:
            return None
        return AuthCredentials(["authenticated"]), ShopUser(name)


Segment = Annotated[Tracker, Depends(get_tracker)]


def tuning_from_env() -> dict[str, Any]:
    """Delivery knobs a deployment may tune (numbers, e.g. SEGMENT_FLUSH_INTERVAL=0.5); the
    write key, host and local store are read from the environment by the package itself."""
    names = ("flush_at", "flush_interval", "max_queue_size", "max_retries", "timeout", "shutdown_timeout")
    tuning: dict[str, Any] = {}
    for name in names:
        raw = os.environ.get(f"SEGMENT_{name.upper()}", "").strip()
        if raw:
            tuning[name] = json.loads(raw) if raw[0].isdigit() else raw
    return tuning


# analytics.js as npm ships it, where scripts/browser-deps installs it for the browser tests.
NPM_ANALYTICS_JS = (
    Path(__file__).resolve().parent.parent / "tests/browser/node_modules/@segment/analytics-next/dist/umd"
)


def first_party_from_env() -> dict[str, Any]:
    """The shop serves analytics.js itself: from ANALYTICS_JS_DIR, else the npm copy when
    scripts/browser-deps installed it, else fetched from Segment's CDN and cached."""
    js_dir = os.environ.get("ANALYTICS_JS_DIR", "").strip() or (
        str(NPM_ANALYTICS_JS) if NPM_ANALYTICS_JS.is_dir() else None
    )
    return {"serve_analytics_js": True, "analytics_js_dir": js_dir}


app = FastAPI(title="Example shop")
app.add_middleware(AuthenticationMiddleware, backend=SessionBackend())
app.add_middleware(SessionMiddleware, secret_key=os.environ.get("SHOP_SECRET_KEY", "example-only-not-secret"))
# Outermost, so it sees every request and the user the inner middleware found.
# SEGMENT_WRITE_KEY from the environment; none -> the embedded store.
app.add_middleware(
    SegmentMiddleware,
    exclude_paths=["/health", "/favicon.ico", "/static/"],
    **first_party_from_env(),
    **tuning_from_env(),
)
# First-party collection: analytics.js, its settings and the browser's calls go through
# /segment/ (with no write key, to the local store like every other event).
app.include_router(collect_router, prefix="/segment")

# The shop's pages are the same Jinja templates as example_flask's (plain paths, no url_for).
TEMPLATES = Path(__file__).resolve().parent.parent / "example_flask" / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.globals["segment_snippet"] = functools.partial(segment_snippet, first_party=True)


def product_properties(slug: str) -> dict[str, Any]:
    name, sku, price, _ = PRODUCTS[slug]
    return {"product_id": slug, "sku": sku, "name": name, "price": price, "currency": "USD"}


def cart(request: Request) -> dict[str, int]:
    value = request.session.get("cart")
    return value if isinstance(value, dict) else {}


def cart_lines(request: Request) -> tuple[list[dict[str, Any]], float]:
    lines = [
        {"slug": slug, "name": PRODUCTS[slug][0], "quantity": qty, "subtotal": PRODUCTS[slug][2] * qty}
        for slug, qty in cart(request).items()
        if slug in PRODUCTS and qty > 0
    ]
    return lines, round(sum(line["subtotal"] for line in lines), 2)


def segment_products(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    products = []
    for line in lines:
        props = product_properties(line["slug"])
        del props["currency"]
        products.append({**props, "quantity": line["quantity"]})
    return products


def page(request: Request, template: str, **context: Any) -> HTMLResponse:
    context.update(
        current_user=request.user,
        cart_count=sum(cart(request).values()),
        messages=request.session.pop("messages", []),
    )
    return templates.TemplateResponse(request, template, context)


@app.get("/", response_class=HTMLResponse)
async def home(request: Request, segment: Segment) -> HTMLResponse:
    segment.title = "Home"
    return page(request, "home.html", products=PRODUCTS)


@app.get("/products/{slug}/", response_class=HTMLResponse)
async def product(request: Request, slug: str, segment: Segment) -> HTMLResponse:
    if slug not in PRODUCTS:
        raise HTTPException(404)
    segment.title = PRODUCTS[slug][0]
    segment.track("Product Viewed", product_properties(slug))
    return page(request, "product.html", slug=slug, product=PRODUCTS[slug])


@app.post("/cart/add/{slug}/")
async def cart_add(request: Request, slug: str, segment: Segment) -> RedirectResponse:
    if slug not in PRODUCTS:
        raise HTTPException(404)
    if not PRODUCTS[slug][3]:
        request.session["messages"] = [f"Sorry, {PRODUCTS[slug][0]} is out of stock."]
        return RedirectResponse(f"/products/{slug}/", status_code=303)
    items = cart(request)
    items[slug] = items.get(slug, 0) + 1
    request.session["cart"] = items
    segment.track("Product Added", {**product_properties(slug), "quantity": 1})
    return RedirectResponse("/cart/", status_code=303)


@app.get("/cart/", response_class=HTMLResponse)
async def cart_view(request: Request, segment: Segment) -> HTMLResponse:
    lines, total = cart_lines(request)
    segment.title = "Cart"
    segment.track("Cart Viewed", {"products": segment_products(lines), "value": total, "currency": "USD"})
    return page(request, "cart.html", lines=lines, total=total)


@app.api_route("/checkout/", methods=["GET", "POST"], response_model=None)
async def checkout(request: Request, segment: Segment) -> HTMLResponse | RedirectResponse:
    if not request.user.is_authenticated:
        return RedirectResponse("/signin/?next=/checkout/", status_code=303)
    lines, total = cart_lines(request)
    segment.title = "Checkout"
    if request.method == "GET":
        return page(request, "cart.html", lines=lines, total=total, checkout=True)
    if not lines:
        request.session["messages"] = ["Your cart is empty."]
        return RedirectResponse("/cart/", status_code=303)
    order_id = f"{request.user.identity}-{time.time_ns()}"
    segment.track(
        "Order Completed",
        {
            "order_id": order_id,
            "total": total,
            "revenue": total,
            "currency": "USD",
            "products": segment_products(lines),
        },
    )
    request.session["cart"] = {}
    return page(request, "done.html", order_id=order_id, total=total)


@app.get("/signin/", response_class=HTMLResponse)
async def signin_form(request: Request, segment: Segment) -> HTMLResponse:
    segment.title = "Sign in"
    return page(request, "signin.html", error=None)


@app.post("/signin/", response_model=None)
async def signin(
    request: Request,
    segment: Segment,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: str = "/",
) -> HTMLResponse | RedirectResponse:
    segment.title = "Sign in"
    if username in USERS and password == USERS[username][2]:
        request.session["user"] = username
        user = ShopUser(username)
        # Links this visitor's anonymousId to the user; later calls in this request carry it.
        segment.identify(user.identity, {"username": username, "email": user.email})
        safe = next.startswith("/") and not next.startswith("//")
        return RedirectResponse(next if safe else "/", status_code=303)
    return page(request, "signin.html", error="Wrong user name or password.")


@app.post("/signout/")
async def signout(request: Request) -> RedirectResponse:
    request.session.pop("user", None)
    return RedirectResponse("/", status_code=303)


@app.get("/stock/feed")
async def stock_feed(delay: float = 0.0) -> StreamingResponse:
    """A streamed response: one line per product, ``delay`` seconds apart (at most 2 s)."""
    delay = min(max(delay, 0.0), 2.0)

    async def lines() -> AsyncIterator[str]:
        for i, (slug, item) in enumerate(PRODUCTS.items()):
            if i:
                await asyncio.sleep(delay)
            yield f"{slug} {'in stock' if item[3] else 'sold out'} {time.time():.3f}\n"

    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/health", response_class=PlainTextResponse)
async def health() -> str:
    """Liveness probe; exclude_paths keeps it out of analytics."""
    return "ok"
