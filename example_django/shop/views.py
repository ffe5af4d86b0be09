"""The shop's pages.

Every request already gets one automatic Segment ``page`` call from the middleware; the views
only add what a page view cannot say: e-commerce events (``request.segment.track``), who the
visitor is once they sign in (an automatic identify, traits from ``identify_traits``) and a nicer page title
(``request.segment.title``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from .models import Order, OrderItem, Product

CART_SESSION_KEY = "cart"  # {slug: quantity}


# ------------------------------------------------------------------------- cart helpers
def _cart(request: HttpRequest) -> dict[str, int]:
    cart = request.session.get(CART_SESSION_KEY)
    return cart if isinstance(cart, dict) else {}


def _cart_lines(request: HttpRequest) -> tuple[list[dict[str, Any]], Decimal]:
    """The cart as (lines, total); products that disappeared since are skipped."""
    cart = _cart(request)
    products = {p.slug: p for p in Product.objects.filter(slug__in=list(cart))}
    lines = []
    total = Decimal("0.00")
    for slug, quantity in cart.items():
        product = products.get(slug)
        if product is None or quantity < 1:
            continue
        subtotal = product.price * quantity
        total += subtotal
        lines.append({"product": product, "quantity": quantity, "subtotal": subtotal})
    return lines, total


def _segment_products(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    products = []
    for line in lines:
        props = line["product"].segment_properties()
        props.pop("currency")
        props["quantity"] = line["quantity"]
        products.append(props)
    return products


def cart_count(request: HttpRequest) -> dict[str, int]:
    """Template context processor: the number of items in the cart, for the header."""
    session = getattr(request, "session", None)
    if session is None:
        return {"cart_count": 0}
    return {"cart_count": sum(q for q in _cart(request).values() if isinstance(q, int) and q > 0)}


# ------------------------------------------------------------------------------- pages
@require_safe
def home(request: HttpRequest) -> HttpResponse:
    request.segment.title = "Home"
    return render(request, "shop/home.html", {"products": Product.objects.all()})


@require_safe
def product(request: HttpRequest, slug: str) -> HttpResponse:
    item = get_object_or_404(Product, slug=slug)
    request.segment.title = item.name
    request.segment.track("Product Viewed", item.segment_properties())
    return render(request, "shop/product.html", {"product": item})


@require_POST
def cart_add(request: HttpRequest, slug: str) -> HttpResponse:
    item = get_object_or_404(Product, slug=slug)
    if not item.in_stock:
        messages.error(request, f"Sorry, {item.name} is out of stock.")
        return redirect(item)
    cart = _cart(request)
    cart[item.slug] = cart.get(item.slug, 0) + 1
    request.session[CART_SESSION_KEY] = cart
    request.segment.track("Product Added", {**item.segment_properties(), "quantity": 1})
    messages.success(request, f"Added {item.name} to your cart.")
    return redirect("cart")


@require_safe
def cart(request: HttpRequest) -> HttpResponse:
    lines, total = _cart_lines(request)
    request.segment.title = "Cart"
    request.segment.track(
        "Cart Viewed",
        {"products": _segment_products(lines), "value": float(total), "currency": "USD"},
    )
    return render(request, "shop/cart.html", {"lines": lines, "total": total})


@login_required
@require_http_methods(["GET", "POST"])
def checkout(request: HttpRequest) -> HttpResponse:
    lines, total = _cart_lines(request)
    request.segment.title = "Checkout"
    if request.method == "GET":
        return render(request, "shop/checkout.html", {"lines": lines, "total": total})
    if not lines:
        messages.error(request, "Your cart is empty.")
        return redirect("cart")
    with transaction.atomic():
        order = Order.objects.create(user=request.user, total=total)
        for line in lines:
            OrderItem.objects.create(
                order=order, product=line["product"], quantity=line["quantity"], price=line["product"].price
            )
    # The order is placed, not paid: "Order Completed" comes from the payment provider's
    # "charge succeeded" webhook (shop/sources.py), once the money is there.
    request.segment.ecommerce.payment_info_entered(
        checkout_id=str(order.pk), order_id=str(order.pk), payment_method="card"
    )
    request.session[CART_SESSION_KEY] = {}
    return redirect("order", pk=order.pk)


@login_required
@require_safe
def order(request: HttpRequest, pk: int) -> HttpResponse:
    placed = get_object_or_404(Order.objects.prefetch_related("items__product"), pk=pk, user=request.user)
    request.segment.title = f"Order #{placed.pk}"
    return render(request, "shop/done.html", {"order": placed})


@require_http_methods(["GET", "POST"])
def signin(request: HttpRequest) -> HttpResponse:
    request.segment.title = "Sign in"
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if request.method == "POST":
        form = AuthenticationForm(request, data=request.POST)
        if form.is_valid():
            user = form.get_user()
            # login() fires user_logged_in: the middleware sends an identify that links this
            # visitor's anonymousId to the user, with traits from SEGMENT["IDENTIFY_TRAITS"].
            login(request, user)
            safe = url_has_allowed_host_and_scheme(
                next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
            )
            return redirect(next_url if next_url and safe else "home")
    else:
        form = AuthenticationForm(request)
    return render(request, "shop/signin.html", {"form": form, "next": next_url})


@require_POST
def signout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("home")


def health(request: HttpRequest) -> HttpResponse:
    """Liveness probe; SEGMENT["EXCLUDE_PATHS"] keeps it out of analytics."""
    return HttpResponse("ok", content_type="text/plain")


# ---------------------------------------------------------------------- async JSON API
async def api_stock(request: HttpRequest, slug: str) -> JsonResponse:
    """An async view: the ORM's async API, and the same tracker as in sync views."""
    item = await Product.objects.filter(slug=slug).afirst()
    request.segment.track("Stock Checked", {"slug": slug})
    return JsonResponse({"slug": slug, "in_stock": bool(item and item.in_stock)})


async def api_ping(request: HttpRequest) -> JsonResponse:
    """An async view that tracks nothing: only the middleware's automatic page call."""
    return JsonResponse({"ok": True})


def identify_traits(user: Any) -> dict[str, Any]:
    """SEGMENT["IDENTIFY_TRAITS"]: what the log-in identify tells Segment about the user."""
    return {"username": user.username, "email": user.email}
