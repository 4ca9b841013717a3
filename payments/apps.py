from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's wiring: the app registry is ready only now
        from billing import credit_notes, invoices
        from billing.signals import invoice_finalized, invoice_status_changed
        from core.schedules import SCHEDULES
        from core.signals import demo_seeded
        from payments import collection, demo, manual, refunds, tasks

        # importing the tasks registers them: web processes enqueue them by name
        SCHEDULES["collect payments"] = (tasks.collect_due_payments.name, 60)
        invoice_finalized.connect(
            collection.on_invoice_finalized, dispatch_uid="payments-collect-on-finalize"
        )
        # billing's own "mark paid" (admin action, API) records a manual payment
        invoice_status_changed.connect(
            manual.on_invoice_status_changed, dispatch_uid="payments-manual-on-paid"
        )
        # after billing's (connected first): its subscriptions get cards and are collected
        demo_seeded.connect(demo.on_demo_seeded, dispatch_uid="payments-demo")
        # a refund in flight holds its amount: a balance credit note can't take it meanwhile
        credit_notes.register_reservation(refunds.pending_amount)
        # a charge under way: the invoice isn't voided under it
        invoices.register_void_blocker(collection.void_blocker)
