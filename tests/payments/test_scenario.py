"""Collection end to end through polar-sdk on the live server, charging through the real
`stripe` library against localstripe: a card that pays, a card that is declined and its dunning
under `collect_payments --as-of`, recovery on a new card, and the final action."""

from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from billing.models import Invoice
from payments.models import CollectionState, InvoiceCollection
from webhooks.models import WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db(transaction=True)

GOOD, DECLINED = "4242424242424242", "4000000000000341"


def attach(polar, customer_id, method_id):
    response = polar._client._client.post(
        f"/v1/customers/{customer_id}/payment-methods", json={"payment_method_id": method_id}
    )
    assert response.status_code == 200, response.text
    return response.json()


def collect(at) -> str:
    out = StringIO()
    call_command("collect_payments", "--as-of", at.isoformat(), stdout=out)
    return out.getvalue()


def payments_of(polar, order_id):
    return sorted(
        polar.payments.list(order_id=order_id, limit=100).items, key=lambda p: p.created_at
    )


def first_order(polar, subscription_id):
    (order,) = polar.orders.list(subscription_id=subscription_id).items
    return order


def customer_with_card(polar, localstripe, name, number):
    customer = polar.customers.create(email=f"{name}@example.com", external_id=name)
    method = attach(polar, customer.id, localstripe.card(number))
    assert (method["brand"], method["last4"]) == ("visa", number[-4:])
    return customer


def test_card_is_charged_at_creation_and_at_the_cycle_close(polar, localstripe, product):
    customer = customer_with_card(polar, localstripe, "ada", GOOD)
    started = timezone.now() - timedelta(days=10)
    subscription = polar.subscriptions.create(
        product_id=product.id, customer_id=customer.id, started_at=started.isoformat()
    )
    order = first_order(polar, subscription.id)
    assert (order.total_amount, order.status) == (2900, "paid")
    (payment,) = payments_of(polar, order.id)
    assert (payment.status, payment.amount, payment.currency, payment.method) == (
        "succeeded",
        2900,
        "usd",
        "card",
    )
    assert (payment.method_metadata.brand, payment.method_metadata.last4) == ("visa", "4242")
    assert (payment.trigger, payment.processor, payment.decline_reason) == (
        "purchase",
        "stripe",
        None,
    )

    polar.events.ingest(
        events=[
            {
                "name": "api.call",
                "external_customer_id": "ada",
                "timestamp": (started + timedelta(days=1, seconds=i)).isoformat(),
            }
            for i in range(7)
        ]
    )
    period_end = datetime.fromisoformat(
        polar.subscriptions.get(id=subscription.id).current_period_end
    )
    call_command(
        "close_cycles", "--as-of", (period_end + timedelta(hours=2)).isoformat(), stdout=StringIO()
    )
    cycle = next(
        o
        for o in polar.orders.list(subscription_id=subscription.id).items
        if o.billing_reason == "subscription_cycle"
    )
    assert (cycle.total_amount, cycle.status) == (2904, "paid")
    (renewal,) = payments_of(polar, cycle.id)
    assert (renewal.amount, renewal.status, renewal.trigger) == (
        2904,
        "succeeded",
        "subscription_cycle",
    )
    listed = polar.payments.list(customer_id=customer.id, limit=100).items
    assert sorted(p.amount for p in listed) == [2900, 2904]

    profile_id = customer.id
    stripe_customer = InvoiceCollection.objects.get(invoice_id=cycle.id).invoice.customer
    stripe_id = stripe_customer.billing_profile.provider_customer_id
    assert sorted(c.amount for c in localstripe.succeeded_charges(stripe_id)) == [2900, 2904]
    assert profile_id == str(stripe_customer.pk)
    receipts = [m for m in mail.outbox if "receipt" in m.subject]
    assert len(receipts) == 2 and receipts[0].to == ["ada@example.com"]


def test_declined_card_dunning_on_schedule_then_recovery_with_a_new_card(
    polar, localstripe, product, live_org_token
):
    WebhookEndpoint.objects.create(
        organization=live_org_token[0],
        url="https://hooks.example.com/x",
        events=["subscription.past_due", "subscription.active", "order.paid"],
    )
    customer = customer_with_card(polar, localstripe, "bob", DECLINED)
    subscription = polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    order = first_order(polar, subscription.id)
    assert order.status == "pending"
    assert polar.subscriptions.get(id=subscription.id).status == "past_due"
    (failed,) = payments_of(polar, order.id)
    assert (failed.status, failed.amount, failed.decline_reason, failed.decline_message) == (
        "failed",
        2900,
        "card_declined",
        "Your card was declined.",
    )
    failure_mail = [m for m in mail.outbox if "failed" in m.subject]
    assert len(failure_mail) == 1 and f"/invoices/{order.id}" in failure_mail[0].body

    collection = InvoiceCollection.objects.get(invoice_id=order.id)
    due = collection.next_attempt_at
    assert due - collection.first_failed_at == timedelta(days=2)
    assert "attempted 0" in collect(due - timedelta(seconds=1))
    assert len(payments_of(polar, order.id)) == 1
    assert "attempted 1 payment(s): 0 succeeded, 1 failed" in collect(due)
    collection.refresh_from_db()
    assert collection.next_attempt_at == due + timedelta(days=5)
    assert "attempted 0" in collect(due + timedelta(days=5) - timedelta(seconds=1))
    attempts = payments_of(polar, order.id)
    assert [(p.status, p.trigger) for p in attempts] == [
        ("failed", "purchase"),
        ("failed", "retry_dunning"),
    ]

    method = attach(polar, customer.id, localstripe.card(GOOD))
    assert method["last4"] == "4242" and len(method["retried_payments"]) == 1
    assert polar.orders.get(id=order.id).status == "paid"
    assert polar.subscriptions.get(id=subscription.id).status == "active"
    last = payments_of(polar, order.id)[-1]
    assert (last.status, last.amount, last.trigger, last.method_metadata.last4) == (
        "succeeded",
        2900,
        "retry_payment_method_update",
        "4242",
    )
    stripe_id = InvoiceCollection.objects.get(
        invoice_id=order.id
    ).invoice.customer.billing_profile.provider_customer_id
    charges = localstripe.charges(stripe_id)
    assert sorted((c.status, c.amount) for c in charges) == [
        ("failed", 2900),
        ("failed", 2900),
        ("succeeded", 2900),
    ]
    assert "attempted 0" in collect(due + timedelta(days=30))
    events = list(WebhookEvent.objects.order_by("created_at").values_list("type", flat=True))
    assert events == ["subscription.past_due", "order.paid", "subscription.active"]


@pytest.mark.parametrize("final_action", ["cancel", "keep"])
def test_final_action_after_the_last_retry(polar, localstripe, product, settings, final_action):
    settings.DUNNING_FINAL_ACTION = final_action
    customer = customer_with_card(polar, localstripe, "cy", DECLINED)
    subscription = polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    order = first_order(polar, subscription.id)
    collection = InvoiceCollection.objects.get(invoice_id=order.id)
    failed_at = collection.first_failed_at
    for retry, days in enumerate((2, 5, 7, 7), start=1):
        due = collection.next_attempt_at
        assert due - failed_at == timedelta(days=days)
        assert "attempted 0" in collect(due - timedelta(seconds=1))
        out = collect(due)
        assert "attempted 1 payment(s): 0 succeeded, 1 failed" in out
        collection.refresh_from_db()
        assert collection.failures == retry + 1
        failed_at = due
        if retry < 4:
            assert polar.subscriptions.get(id=subscription.id).status == "past_due"
    assert collection.state == CollectionState.EXHAUSTED and collection.next_attempt_at is None
    assert [p.status for p in payments_of(polar, order.id)] == ["failed"] * 5
    assert any("last automatic attempt" in m.body for m in mail.outbox)
    assert "attempted 0" in collect(failed_at + timedelta(days=60))
    status = polar.subscriptions.get(id=subscription.id).status
    invoice_status = Invoice.objects.get(pk=order.id).status
    if final_action == "cancel":
        assert "revoked 1 subscription(s)" in out
        assert (status, invoice_status) == ("canceled", "uncollectible")
    else:
        assert "revoked 0 subscription(s)" in out
        assert (status, invoice_status) == ("past_due", "open")
