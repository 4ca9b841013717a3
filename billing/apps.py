from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's wiring: the app registry is ready only now
        from billing import catalog, credits, demo, subscriptions, tasks
        from billing.api.state import customer_state_section
        from billing.signals import credit_note_issued, invoice_finalized, invoice_status_changed
        from core.schedules import SCHEDULES
        from core.signals import demo_seeded
        from customers.api.state import register_state_section
        from metering import hooks

        SCHEDULES["close billing cycles"] = ("billing.tasks.close_due_cycles", 60)
        # the ingest-time check does the work; this catches what a lost task missed
        SCHEDULES["spend thresholds sweep"] = ("billing.tasks.sweep_spend_thresholds", 300)

        # customer meters show the current billing period of a subscription pricing the meter
        hooks.register_period_numbers(subscriptions.customer_period_numbers)
        register_state_section(customer_state_section)
        hooks.register_definition_change_guard(catalog.meter_definition_blockers)
        hooks.register_archive_guard(catalog.meter_archive_blockers)
        # a finalized invoice gets its PDF stored and emailed after the transaction commits
        invoice_finalized.connect(tasks.enqueue_delivery, dispatch_uid="billing-invoice-delivery")
        credit_note_issued.connect(
            tasks.enqueue_credit_note_delivery, dispatch_uid="billing-credit-note-delivery"
        )
        demo_seeded.connect(demo.on_demo_seeded, dispatch_uid="billing-demo")
        # spend thresholds are checked once an ingest commits, for the batch's customers
        hooks.events_ingested.connect(
            tasks.enqueue_threshold_check, dispatch_uid="billing-spend-thresholds"
        )
        # credit packs: a paid pack order grants its units; ingests may trigger auto top-ups
        invoice_status_changed.connect(
            credits.on_invoice_status_changed, dispatch_uid="billing-credit-packs"
        )
        hooks.events_ingested.connect(
            tasks.enqueue_top_up_check, dispatch_uid="billing-credit-top-ups"
        )
