from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing import catalog, demo, subscriptions, usage
        from billing.api.state import customer_state_section
        from core.schedules import SCHEDULES
        from core.signals import demo_seeded
        from customers.api.views import STATE_SECTIONS

        SCHEDULES["close billing cycles"] = ("billing.tasks.close_due_cycles", 60)

        # customer meters show the current billing period of a subscription pricing the meter
        usage.register_period_numbers(subscriptions.customer_period_numbers)
        if customer_state_section not in STATE_SECTIONS:
            STATE_SECTIONS.append(customer_state_section)
        usage.register_meter_blockers(
            definition_change=catalog.meter_definition_blockers,
            archive=catalog.meter_archive_blockers,
        )
        demo_seeded.connect(demo.on_demo_seeded, dispatch_uid="billing-demo")
