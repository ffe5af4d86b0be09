"""The example shop on Flask: the same pages as example_django, tracked by ``Segment(app)``.

Every request gets one automatic Segment ``page`` call from the extension; views add what a
page view cannot say (``request.segment.track``), who the visitor is once they sign in
(Flask-Login's ``user_logged_in`` makes the extension send an identify) and a page title.

Run it with ``./dev example flask`` (embedded store, no Segment account needed) or under
gunicorn: ``gunicorn --chdir example_flask -w 2 --preload app:app``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import (
    Flask,
    Response,
    abort,
    flash,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user

from segment_middleware.flask import Segment

# slug, name, sku, price, in stock
PRODUCTS = {
    "espresso-beans": ("Espresso Beans 1kg", "COF-ESP-1000", 24.50, True),
    "pour-over-kettle": ("Pour-over Kettle", "KIT-KTL-001", 39.00, True),
    "ceramic-mug": ("Ceramic Mug", "KIT-MUG-350", 12.00, True),
    "hand-grinder": ("Hand Grinder", "KIT-GRD-002", 89.90, False),
}
USERS = {"alice": ("1", "alice@example.com", "alice-password")}


class User(UserMixin):
    def __init__(self, username: str) -> None:
        self.id, self.email, self.password = USERS[username]
        self.username = username


def product_properties(slug: str) -> dict[str, Any]:
    """The product as Segment's e-commerce spec describes it."""
    name, sku, price, _ = PRODUCTS[slug]
    return {"product_id": slug, "sku": sku, "name": name, "price": price, "currency": "USD"}


def identify_traits(user: User) -> dict[str, Any]:
    """SEGMENT_IDENTIFY_TRAITS: what the log-in identify tells Segment about the user."""
    return {"username": user.username, "email": user.email}


#: Delivery knobs a deployment may tune through the environment (the write key, host and
#: local store are read from the environment by the package itself).
TUNING = ("FLUSH_AT", "FLUSH_INTERVAL", "MAX_QUEUE_SIZE", "MAX_RETRIES", "TIMEOUT", "SHUTDOWN_TIMEOUT")


def create_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SHOP_SECRET_KEY", "example-only-not-secret"),
        SEGMENT_EXCLUDE_PATHS=["/health", "/favicon.ico", "/static/"],
        SEGMENT_IDENTIFY_TRAITS=identify_traits,
    )
    for name in TUNING:  # numbers, e.g. SEGMENT_FLUSH_INTERVAL=0.5; Segment(app) validates them
        raw = os.environ.get(f"SEGMENT_{name}", "").strip()
        if raw:
            app.config[f"SEGMENT_{name}"] = json.loads(raw) if raw[0].isdigit() else raw
    app.config.update(config)
    login = LoginManager(app)
    login.login_view = "signin"

    @login.user_loader
    def load_user(user_id: str) -> User | None:
        for name, (uid, _, _) in USERS.items():
            if uid == user_id:
                return User(name)
        return None

    Segment(app)  # SEGMENT_WRITE_KEY from the environment; none -> the embedded store
    register_views(app)
    return app


def cart() -> dict[str, int]:
    value = session.get("cart")
    return value if isinstance(value, dict) else {}


def cart_lines() -> tuple[list[dict[str, Any]], float]:
    lines = [
        {"slug": slug, "name": PRODUCTS[slug][0], "quantity": qty, "subtotal": PRODUCTS[slug][2] * qty}
        for slug, qty in cart().items()
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


def register_views(app: Flask) -> None:
    @app.context_processor
    def header() -> dict[str, Any]:
        return {"cart_count": sum(cart().values()), "messages": get_flashed_messages()}

    @app.get("/")
    def home() -> str:
        request.segment.title = "Home"
        return render_template("home.html", products=PRODUCTS)

    @app.get("/products/<slug>/")
    def product(slug: str) -> str:
        if slug not in PRODUCTS:
            abort(404)
        request.segment.title = PRODUCTS[slug][0]
        request.segment.track("Product Viewed", product_properties(slug))
        return render_template("product.html", slug=slug, product=PRODUCTS[slug])

    @app.post("/cart/add/<slug>/")
    def cart_add(slug: str) -> Response:
        if slug not in PRODUCTS:
            abort(404)
        if not PRODUCTS[slug][3]:
            flash(f"Sorry, {PRODUCTS[slug][0]} is out of stock.")
            return redirect(url_for("product", slug=slug))
        items = cart()
        items[slug] = items.get(slug, 0) + 1
        session["cart"] = items
        request.segment.track("Product Added", {**product_properties(slug), "quantity": 1})
        return redirect(url_for("cart_view"))

    @app.get("/cart/")
    def cart_view() -> str:
        lines, total = cart_lines()
        request.segment.title = "Cart"
        request.segment.track(
            "Cart Viewed", {"products": segment_products(lines), "value": total, "currency": "USD"}
        )
        return render_template("cart.html", lines=lines, total=total)

    @app.route("/checkout/", methods=["GET", "POST"])
    @login_required
    def checkout() -> Any:
        lines, total = cart_lines()
        request.segment.title = "Checkout"
        if request.method == "GET":
            return render_template("cart.html", lines=lines, total=total, checkout=True)
        if not lines:
            flash("Your cart is empty.")
            return redirect(url_for("cart_view"))
        order_id = f"{current_user.id}-{time.time_ns()}"
        request.segment.track(
            "Order Completed",
            {
                "order_id": order_id,
                "total": total,
                "revenue": total,
                "currency": "USD",
                "products": segment_products(lines),
            },
        )
        session["cart"] = {}
        return render_template("done.html", order_id=order_id, total=total)

    @app.route("/signin/", methods=["GET", "POST"])
    def signin() -> Any:
        request.segment.title = "Sign in"
        error = None
        if request.method == "POST":
            name = request.form.get("username", "")
            if name in USERS and request.form.get("password") == USERS[name][2]:
                login_user(User(name))  # user_logged_in -> identify linking anonymousId and userId
                target = request.args.get("next", "")
                return redirect(target if target.startswith("/") and not target.startswith("//") else "/")
            error = "Wrong user name or password."
        return render_template("signin.html", error=error)

    @app.post("/signout/")
    def signout() -> Response:
        logout_user()
        return redirect("/")

    @app.get("/stock/feed")
    def stock_feed() -> Response:
        """A streamed response: one line per product, ``delay`` seconds apart (at most 2 s)."""
        delay = min(max(request.args.get("delay", 0.0, type=float), 0.0), 2.0)

        def lines() -> Iterator[str]:
            for i, (slug, item) in enumerate(PRODUCTS.items()):
                if i:
                    time.sleep(delay)
                yield f"{slug} {'in stock' if item[3] else 'sold out'} {time.time():.3f}\n"

        return Response(stream_with_context(lines()), mimetype="text/plain")

    @app.get("/health")
    def health() -> str:
        """Liveness probe; SEGMENT_EXCLUDE_PATHS keeps it out of analytics."""
        return "ok"


app = create_app()
