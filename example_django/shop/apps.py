from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Example shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the source function served at /segment/sources/payments.
        from . import sources  # noqa: F401
