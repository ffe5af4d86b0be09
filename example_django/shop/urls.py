from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("products/<slug:slug>/", views.product, name="product"),
    path("cart/", views.cart, name="cart"),
    path("cart/add/<slug:slug>/", views.cart_add, name="cart-add"),
    path("checkout/", views.checkout, name="checkout"),
    path("orders/<int:pk>/", views.order, name="order"),
    path("signin/", views.signin, name="signin"),
    path("signout/", views.signout, name="signout"),
    path("health", views.health, name="health"),
    path("api/stock/<slug:slug>", views.api_stock, name="api-stock"),
    path("api/ping", views.api_ping, name="api-ping"),
    # first-party collection and source functions (/segment/sources/payments: shop/sources.py)
    path("segment/", include("segment_middleware.django.urls")),
]
