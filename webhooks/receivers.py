"""What webhooks hears from the apps below (Django signals they send inside their
transactions) and turns into outbox rows, sent by Celery after the commit. Connected in
`WebhooksConfig.ready`.

A payload is rendered only when an enabled endpoint subscribes to the event type; which
endpoints an organization has is cached (`delivery.ENDPOINTS_CACHE_SECONDS`), so an
organization without webhooks pays no query per change."""

from billing.models import InvoiceStatus
from webhooks import alerts, delivery, payloads, state_changes, tasks


def emit(organization_id, event_type: str, render) -> None:
    endpoints = delivery.subscribed_endpoints(organization_id, event_type)
    if endpoints:
        tasks.enqueue(delivery.record(endpoints, event_type, render()))


def on_endpoint_changed(sender, instance, **kwargs):
    delivery.forget_endpoints(instance.organization_id)


def state_changed(organization_id, customer_id) -> None:
    if not delivery.has_subscribers(organization_id, "customer.state_changed"):
        return
    if state_changes.mark(organization_id, customer_id):
        tasks.schedule_state_flush()


def on_subscription_created(sender, subscription, **kwargs):
    emit(
        subscription.organization_id,
        "subscription.created",
        lambda: payloads.subscription_data(subscription),
    )
    state_changed(subscription.organization_id, subscription.customer_id)


def on_subscription_changed(sender, subscription, change, **kwargs):
    render = lambda: payloads.subscription_data(subscription)  # noqa: E731
    # Polar sends `subscription.updated` along with every specific change
    if change != "updated":
        emit(subscription.organization_id, f"subscription.{change}", render)
    emit(subscription.organization_id, "subscription.updated", render)
    state_changed(subscription.organization_id, subscription.customer_id)


def on_invoice_finalized(sender, invoice, **kwargs):
    emit(invoice.organization_id, "order.created", lambda: payloads.order_data(invoice))


def on_invoice_status_changed(sender, invoice, previous, **kwargs):
    render = lambda: payloads.order_data(invoice)  # noqa: E731
    if invoice.status == InvoiceStatus.PAID:
        emit(invoice.organization_id, "order.paid", render)
    emit(invoice.organization_id, "order.updated", render)


def on_invoice_refunded(sender, invoice, **kwargs):
    render = lambda: payloads.order_data(invoice)  # noqa: E731
    emit(invoice.organization_id, "order.refunded", render)
    emit(invoice.organization_id, "order.updated", render)


def on_customer_created(sender, customer, **kwargs):
    emit(customer.organization_id, "customer.created", lambda: payloads.customer_data(customer))
    state_changed(customer.organization_id, customer.pk)


def on_customer_updated(sender, customer, **kwargs):
    emit(customer.organization_id, "customer.updated", lambda: payloads.customer_data(customer))
    state_changed(customer.organization_id, customer.pk)


def on_customer_deleted(sender, customer, **kwargs):
    emit(customer.organization_id, "customer.deleted", lambda: payloads.customer_data(customer))


def on_events_ingested(sender, organization, batch, **kwargs):
    # one indexed query per ingest for organizations without alert rules
    if alerts.has_rules(organization.pk):
        customer_ids = batch.customer_ids
        if customer_ids:
            tasks.evaluate_alerts.delay_on_commit(
                str(organization.pk), [str(pk) for pk in customer_ids]
            )


def on_refund_created(sender, refund, **kwargs):
    emit(refund.organization_id, "refund.created", lambda: payloads.refund_data(refund))


def on_refund_updated(sender, refund, **kwargs):
    emit(refund.organization_id, "refund.updated", lambda: payloads.refund_data(refund))
