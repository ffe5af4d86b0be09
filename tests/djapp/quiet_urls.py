"""Routes for tests/test_quiet_defaults.py: pages, a view's own 404, paths under STATIC_URL
and MEDIA_URL answered by views (so only the exclusion can keep them quiet), and
django-debug-toolbar's URLs under the prefix its docs use."""

from django.http import Http404, HttpResponse
from django.urls import include, path


def page(request):
    return HttpResponse("ok")


def gone(request):
    raise Http404("the view's own 404")


urlpatterns = [
    path("", page, name="quiet-home"),
    path("gone/", gone, name="quiet-gone"),
    path("static/app.css", page, name="quiet-static"),
    path("media/photo.png", page, name="quiet-media"),
    path("__debug__/", include("debug_toolbar.urls")),
]
