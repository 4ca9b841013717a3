from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing import signals as billing_signals
        from core.schedules import SCHEDULES
        from customers import hooks as customer_hooks
        from metering import hooks as metering_hooks
        from payments import signals as payment_signals
        from webhooks import receivers
        from webhooks.models import WebhookEndpoint

        SCHEDULES["deliver due webhooks"] = ("webhooks.tasks.deliver_due_events", 60)
        SCHEDULES["flush customer state webhooks"] = ("webhooks.tasks.flush_state_changes", 60)
        for signal, receiver in (
            (billing_signals.subscription_created, receivers.on_subscription_created),
            (billing_signals.subscription_changed, receivers.on_subscription_changed),
            (billing_signals.invoice_finalized, receivers.on_invoice_finalized),
            (billing_signals.invoice_status_changed, receivers.on_invoice_status_changed),
            (billing_signals.invoice_refunded, receivers.on_invoice_refunded),
            (customer_hooks.customer_created, receivers.on_customer_created),
            (customer_hooks.customer_updated, receivers.on_customer_updated),
            (customer_hooks.customer_deleted, receivers.on_customer_deleted),
            (metering_hooks.events_ingested, receivers.on_events_ingested),
            (payment_signals.refund_created, receivers.on_refund_created),
            (payment_signals.refund_updated, receivers.on_refund_updated),
        ):
            signal.connect(receiver, dispatch_uid=f"webhooks.{receiver.__name__}")
        for signal in (post_save, post_delete):
            signal.connect(
                receivers.on_endpoint_changed,
                sender=WebhookEndpoint,
                dispatch_uid=f"webhooks.endpoint_cache.{signal is post_save}",
            )
