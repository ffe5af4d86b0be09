"""``path()`` takes views annotated with ``TrackedHttpRequest``, sync and async."""

import django_views
from django.urls import include, path

urlpatterns = [
    path("checkout/", django_views.checkout, name="checkout"),
    path("items/<slug:slug>/", django_views.item, name="item"),
    path("plain/", django_views.plain),
    path("segment/", include("segment_middleware.django.urls")),
]
