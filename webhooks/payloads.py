"""The `data` of each webhook in Polar's shapes, rendered by the same functions the REST API
uses, so a webhook and a GET of the same object agree."""

from billing import cycles, subscriptions
from billing.api import payloads as billing_payloads
from billing.models import Invoice
from customers.api.serializers import customer_payload
from customers.api.state import customer_state
from customers.models import Customer
from payments.api.refunds import refund_payload


def subscription_data(subscription) -> dict:
    loaded = cycles.live_subscriptions().get(pk=subscription.pk)
    meters = subscriptions.current_meters([loaded])
    return billing_payloads.subscription_payload(loaded, meters[loaded.pk])


def order_data(invoice) -> dict:
    loaded = (
        Invoice.objects.select_related("customer", "product", "discount", "subscription__product")
        .prefetch_related("lines", "discount__products")
        .get(pk=invoice.pk)
    )
    return billing_payloads.order_payload(loaded)


def customer_data(customer) -> dict:
    return dict(customer_payload(customer))


def refund_data(refund) -> dict:
    return refund_payload(refund)


def customer_state_data(customer_id) -> dict | None:
    customer = Customer.objects.filter(pk=customer_id, deleted_at__isnull=True).first()
    return customer_state(customer) if customer else None
