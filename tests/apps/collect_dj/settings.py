import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/apps: collect_apps

from collect_apps import collect_settings

SECRET_KEY = "collect-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "collect_dj.urls"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "segment_middleware.django"]
MIDDLEWARE = [
    "django.middleware.csrf.CsrfViewMiddleware",
    "collect_dj.urls.HeaderUser",
    "segment_middleware.django.SegmentMiddleware",
]
DATABASES: dict = {}
SEGMENT = collect_settings()
SILENCED_SYSTEM_CHECKS = ["segment.E100", "segment.W100"]
LOGGING_CONFIG = None
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collect_dj.settings")
