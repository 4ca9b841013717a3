from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Django's wiring: the app registry is ready only now
        from billing.signals import invoice_finalized
        from core.schedules import SCHEDULES
        from payments import collection, tasks

        # importing the tasks registers them: web processes enqueue them by name
        SCHEDULES["collect payments"] = (tasks.collect_due_payments.name, 60)
        invoice_finalized.connect(
            collection.on_invoice_finalized, dispatch_uid="payments-collect-on-finalize"
        )
