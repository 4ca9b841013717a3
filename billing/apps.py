from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing import catalog, demo, subscriptions, usage
        from billing.api.state import customer_state_section
        from core.schedules import SCHEDULES
        from core.signals import demo_seeded
        from customers.api.state import register_state_section

        SCHEDULES["close billing cycles"] = ("billing.tasks.close_due_cycles", 60)

        # customer meters show the current billing period of a subscription pricing the meter
        usage.register_period_numbers(subscriptions.customer_period_numbers)
        register_state_section(customer_state_section)
        usage.register_meter_blockers(
            definition_change=catalog.meter_definition_blockers,
            archive=catalog.meter_archive_blockers,
        )
        demo_seeded.connect(demo.on_demo_seeded, dispatch_uid="billing-demo")
