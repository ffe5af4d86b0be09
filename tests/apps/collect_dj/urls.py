from typing import Any

from collect_apps import stats_body, test_user
from django.http import HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import ensure_csrf_cookie


class User:
    is_authenticated = True

    def __init__(self, pk: str, is_staff: bool) -> None:
        self.pk = pk
        self.is_staff = is_staff


class Anonymous:
    is_authenticated = False
    is_staff = False
    pk = None


class HeaderUser:
    """Stands in for sessions and AuthenticationMiddleware: the user from X-Test-User."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        user = test_user(request.headers.get("X-Test-User"))
        request.user = Anonymous() if user is None else User(user["id"], user["is_staff"])
        return self.get_response(request)


@ensure_csrf_cookie
def health(request: Any) -> HttpResponse:
    return HttpResponse("ok")


def stats(request: Any) -> HttpResponse:
    return HttpResponse(stats_body(), content_type="application/json")


urlpatterns = [
    path("health", health),
    path("stats", stats),
    path("segment/", include("segment_middleware.django.urls")),
]
