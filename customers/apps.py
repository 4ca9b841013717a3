from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "customers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from customers.api import schema  # noqa: F401  (registers the OpenAPI auth scheme)
