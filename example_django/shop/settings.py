"""Settings for the example shop. Everything that varies comes from the environment.

Environment variables read here:

    DJANGO_SECRET_KEY        secret key (an insecure development default otherwise)
    DJANGO_DEBUG             "1" (default) or "0"
    SHOP_DB                  sqlite file (default: db.sqlite3 next to manage.py)
    SEGMENT_WRITE_KEY        Segment write key; unset -> events go to the local store
    SEGMENT_HOST             Segment API host, e.g. a local mock
    SEGMENT_LOCAL_STORE      file of the local event store
    SEGMENT_FLUSH_AT, SEGMENT_FLUSH_INTERVAL, SEGMENT_MAX_QUEUE_SIZE, SEGMENT_MAX_RETRIES,
    SEGMENT_TIMEOUT, SEGMENT_SHUTDOWN_TIMEOUT
                             delivery knobs, passed on only when set
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent  # example_django/

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "django-insecure-example-shop-do-not-use-in-production"
DEBUG = os.environ.get("DJANGO_DEBUG", "1").strip().lower() in ("1", "true", "yes", "on")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "segment_middleware.django",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Right after authentication, so the page call carries request.user's id.
    "segment_middleware.django.SegmentMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
ASGI_APPLICATION = "shop.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "shop.views.cart_count",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB") or str(BASE_DIR / "db.sqlite3"),
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

LOGIN_URL = "signin"
LOGIN_REDIRECT_URL = "home"


def segment_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The SEGMENT setting: fixed choices plus whatever the environment sets.

    Unset (or empty) variables are left out, so the middleware's own defaults apply. Without
    SEGMENT_WRITE_KEY nothing leaves the machine: events go to the local store.
    """
    config: dict[str, Any] = {
        "EXCLUDE_PATHS": ["/health", "/favicon.ico", "/static/"],
        "IDENTIFY_TRAITS": "shop.views.identify_traits",
    }
    knobs: tuple[tuple[str, Callable[[str], Any]], ...] = (
        ("WRITE_KEY", str),
        ("HOST", str),
        ("LOCAL_STORE", str),
        ("FLUSH_AT", int),
        ("FLUSH_INTERVAL", float),
        ("MAX_QUEUE_SIZE", int),
        ("MAX_RETRIES", int),
        ("TIMEOUT", float),
        ("SHUTDOWN_TIMEOUT", float),
    )
    for key, cast in knobs:
        var = f"SEGMENT_{key}"
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        try:
            config[key] = cast(raw)
        except ValueError:
            kind = "an integer" if cast is int else "a number"
            raise ImproperlyConfigured(f"{var} must be {kind}, got {raw!r}") from None
    return config


SEGMENT = segment_from_env(os.environ)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "segment_middleware": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
