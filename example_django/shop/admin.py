"""Admin registrations. Inert unless "django.contrib.admin" is added to INSTALLED_APPS (and its URLs)."""

from django.contrib import admin

from .models import Order, OrderItem, Product


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "sku", "price", "in_stock"]
    prepopulated_fields = {"slug": ["name"]}


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "total", "created"]
    inlines = [OrderItemInline]
