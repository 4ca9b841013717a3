from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing import subscriptions, usage
        from core.schedules import SCHEDULES

        SCHEDULES["close billing cycles"] = ("billing.tasks.close_due_cycles", 60)

        # customer meters show the current billing period of a subscription pricing the meter
        usage.register_period_numbers(subscriptions.customer_period_numbers)
