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
    PAYMENTS_WEBHOOK_SECRET  the payment provider's webhook signing secret (Stripe's
                             "whsec_..."); with DEBUG on, a development default otherwise
    ANALYTICS_JS_DIR         where the shop serves analytics.js from (first-party mode);
                             default: the npm copy scripts/browser-deps installs, when there,
                             else fetched from Segment's CDN and cached
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


# analytics.js as npm ships it, where scripts/browser-deps installs it for the browser tests.
NPM_ANALYTICS_JS = BASE_DIR.parent / "tests/browser/node_modules/@segment/analytics-next/dist/umd"

# The webhook secret `manage.py pay_order` signs with when PAYMENTS_WEBHOOK_SECRET is unset
# and DEBUG is on. Known to everyone: never the secret of a deployed shop.
DEV_PAYMENTS_WEBHOOK_SECRET = "whsec_example-shop-development-only"


def segment_from_env(environ: Mapping[str, str], debug: bool = False) -> dict[str, Any]:
    """The SEGMENT setting: fixed choices plus whatever the environment sets.

    Unset (or empty) variables are left out, so the middleware's own defaults apply. Without
    SEGMENT_WRITE_KEY nothing leaves the machine: events go to the local store. Without a
    payments webhook secret (PAYMENTS_WEBHOOK_SECRET, or the development one when ``debug``)
    the payments source answers 500 and runs nothing: it never takes unsigned webhooks.
    """
    config: dict[str, Any] = {
        "EXCLUDE_PATHS": ["/health", "/favicon.ico", "/static/"],
        "IDENTIFY_TRAITS": "shop.views.identify_traits",
    }
    webhook_secret = environ.get("PAYMENTS_WEBHOOK_SECRET", "").strip() or (
        DEV_PAYMENTS_WEBHOOK_SECRET if debug else ""
    )
    if webhook_secret:
        config["SOURCE_SECRETS"] = {"payments": webhook_secret}  # shop/sources.py
    # First-party mode (base.html): analytics.js, its settings and the browser's calls all go
    # through the shop's /segment/ mount; with no write key they end in the local store.
    config["SERVE_ANALYTICS_JS"] = True
    js_dir = environ.get("ANALYTICS_JS_DIR", "").strip() or (
        str(NPM_ANALYTICS_JS) if NPM_ANALYTICS_JS.is_dir() else ""
    )
    if js_dir:
        config["ANALYTICS_JS_DIR"] = js_dir
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


SEGMENT = segment_from_env(os.environ, debug=DEBUG)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "segment_middleware": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
