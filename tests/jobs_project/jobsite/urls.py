from django.urls import path

from . import views

urlpatterns = [
    path("health", views.health),
    path("celery/checkout/", views.celery_checkout, name="celery-checkout"),
    path("rq/checkout/", views.rq_checkout, name="rq-checkout"),
    path("django/checkout/", views.django_checkout, name="django-checkout"),
]
