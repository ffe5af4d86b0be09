"""One route that matches every path, for the adapters' property test (test_adapter_fuzz.py)."""

from django.http import HttpResponse
from django.urls import re_path


def anything(request):
    return HttpResponse("ok")


urlpatterns = [re_path(r"", anything, name="fuzz-any")]
