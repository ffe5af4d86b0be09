"""Create the demo catalogue and the demo user. Safe to run any number of times."""

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from shop.models import Product

PRODUCTS = [
    # slug, name, sku, price, in stock
    ("espresso-beans", "Espresso Beans 1kg", "COF-ESP-1000", "24.50", True),
    ("pour-over-kettle", "Pour-over Kettle", "KIT-KTL-001", "39.00", True),
    ("ceramic-mug", "Ceramic Mug", "KIT-MUG-350", "12.00", True),
    ("hand-grinder", "Hand Grinder", "KIT-GRD-002", "89.90", False),
]

DEMO_USER = ("alice", "alice@example.com", "alice-password")


class Command(BaseCommand):
    help = "Create a few products and the demo user alice/alice-password (idempotent)."

    def handle(self, *args, **options):
        for slug, name, sku, price, in_stock in PRODUCTS:
            _, created = Product.objects.get_or_create(
                slug=slug, defaults={"name": name, "sku": sku, "price": Decimal(price), "in_stock": in_stock}
            )
            self.stdout.write(f"product {slug}: {'created' if created else 'already there'}")

        username, email, password = DEMO_USER
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            User.objects.create_user(username=username, email=email, password=password)
            self.stdout.write(f"user {username}: created (password {password!r})")
        elif not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])
            self.stdout.write(f"user {username}: already there, password reset to {password!r}")
        else:
            self.stdout.write(f"user {username}: already there")
        self.stdout.write(self.style.SUCCESS("shop seeded"))
