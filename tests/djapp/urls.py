from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("products/<slug:slug>/", views.product, name="product"),
    path("boom/", views.boom, name="boom"),
    path("signin/", views.signin, name="signin"),
    path("signout/", views.signout, name="signout"),
    path("whoami/", views.whoami, name="whoami"),
    path("identify/", views.identify, name="identify"),
    path("misuse/", views.misuse, name="misuse"),
    path("stream/", views.stream, name="stream"),
    path("health", views.health, name="health"),
    path("async/", views.async_view, name="async"),
    path("async-boom/", views.async_boom, name="async-boom"),
]
