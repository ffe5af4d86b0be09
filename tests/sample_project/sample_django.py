"""A Django view that tracks a sign-up (the README's example)."""

from django.http import HttpResponse
from django.urls import path


def signup(request):
    request.segment.track("Signed Up", {"plan": request.POST.get("plan", "free")})
    return HttpResponse("welcome")


urlpatterns = [path("signup/", signup, name="signup")]
