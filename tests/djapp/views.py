from django.contrib.auth import login, logout
from django.contrib.auth.models import User
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

import segment_middleware


def home(request):
    request.segment.title = "Home"
    return HttpResponse("home")


def product(request, slug):
    request.segment.track("Product Viewed", {"slug": slug, "price": 9.5})
    return HttpResponse(slug)


def boom(request):
    raise RuntimeError("view failed")


def signin(request):
    user, _ = User.objects.get_or_create(username=request.GET.get("u", "alice"))
    login(request, user)
    return HttpResponse("signed in")


def signout(request):
    logout(request)
    return HttpResponse("bye")


def whoami(request):
    tracker = segment_middleware.current()
    return JsonResponse(
        {
            "same": tracker is request.segment,
            "anonymousId": tracker.anonymous_id if tracker else None,
            "userId": tracker.user_id if tracker else None,
            "enabled": tracker.enabled if tracker else None,
        }
    )


def identify(request):
    request.segment.identify("u-77", {"plan": "pro"})
    request.segment.track("After Identify")
    return HttpResponse("ok")


def misuse(request):
    kind = request.GET.get("kind")
    try:
        if kind == "event":
            request.segment.track("")
        elif kind == "props":
            request.segment.track("E", ["not", "a", "dict"])
        else:
            request.segment.track("E", {"bad": object()})
    except (TypeError, ValueError) as exc:
        return HttpResponse(f"{type(exc).__name__}: {exc}", status=400)
    return HttpResponse("no error")


def stream(request):
    return StreamingHttpResponse(iter([b"a", b"b"]))


def health(request):
    return HttpResponse("ok")


async def async_view(request):
    request.segment.track("Async Tracked")
    return JsonResponse({"user": request.segment.user_id})


async def async_boom(request):
    raise RuntimeError("async view failed")
