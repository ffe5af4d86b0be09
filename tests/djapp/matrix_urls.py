"""The settings matrix's routes for Django (tests/adapters.py has the same for each adapter)."""

from django.contrib.auth import login, logout
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.urls import path

import segment_middleware


def home(request):
    return HttpResponse("ok")


def track(request):
    segment_middleware.current().track("Matrix Event", {"k": 1})
    return HttpResponse("tracked")


def boom(request):
    raise RuntimeError("matrix boom")


def do_login(request):
    user, _ = User.objects.get_or_create(username="matrix-user")
    login(request, user)
    return HttpResponse(str(user.pk))


def do_signup(request):
    """An anonymous visitor creates their account, then is logged in (a sign-up view)."""
    import uuid

    user = User.objects.create_user(username=f"new-{uuid.uuid4().hex[:12]}")
    login(request, user)
    return HttpResponse(str(user.pk))


def create_as_staff(request):
    """A signed-in user creates another user (an admin form): not a sign-up."""
    import uuid

    staff, _ = User.objects.get_or_create(username="matrix-user")
    login(request, staff)
    User.objects.create_user(username=f"made-{uuid.uuid4().hex[:12]}")
    return HttpResponse("made")


def do_logout(request):
    """Logs in, then out: the test clients keep no session between requests."""
    user, _ = User.objects.get_or_create(username="matrix-user")
    login(request, user)
    logout(request)
    return HttpResponse("out")


urlpatterns = [
    path("logout", do_logout, name="matrix-logout"),
    path("signup", do_signup, name="matrix-signup"),
    path("create-user", create_as_staff, name="matrix-create-user"),
    path("", home, name="matrix-home"),
    path("track", track, name="matrix-track"),
    path("login", do_login, name="matrix-login"),
    path("health", home, name="matrix-health"),
    path("boom", boom, name="matrix-boom"),
    path("café", home, name="matrix-cafe"),
]
