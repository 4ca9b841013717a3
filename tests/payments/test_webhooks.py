"""Provider webhooks in one process: only a payment the database has pending is settled by
them, each event id is applied once, and refund/dispute events are recorded."""

import json
import time

import pytest

from billing import catalog, subscriptions
from billing.catalog import PriceSpec
from billing.models import InvoiceStatus, SubscriptionStatus
from customers.services import create_customer
from payments import methods
from payments.models import Payment, PaymentStatus, ProviderEvent
from tests.localstripe import sign_webhook

pytestmark = pytest.mark.django_db

URL = "/v1/payments/providers/stripe/webhook"


def post(client, event):
    payload = json.dumps(event).encode()
    return client.post(
        URL,
        payload,
        content_type="application/json",
        **{"HTTP_STRIPE_SIGNATURE": sign_webhook(payload)},
    )


def event(event_id, type_, obj):
    return {
        "id": event_id,
        "object": "event",
        "created": int(time.time()),
        "type": type_,
        "data": {"object": obj},
    }


@pytest.fixture
def pending_payment(organization, stripe_settings, localstripe):
    """A subscription's first invoice with its attempt recorded and its intent created, as a
    collector leaves it just before confirming."""
    customer = create_customer(organization=organization, email="pat@example.com")
    methods.set_default_method(customer, localstripe.card("4000000000000341"))
    product = catalog.create_product(
        organization=organization,
        name="Plan",
        prices=[PriceSpec(amount_type="fixed", price_amount=1500)],
    )
    subscription = subscriptions.create_subscription(customer=customer, product=product)
    invoice = subscription.invoices.get()
    payment = Payment.objects.create(
        organization=organization,
        invoice=invoice,
        customer=customer,
        attempt=1,
        trigger="purchase",
        status=PaymentStatus.PENDING,
        amount=1500,
        currency="USD",
        provider="stripe",
        provider_payment_id="pi_fromwebhook",
        idempotency_key=f"{invoice.pk}:1",
    )
    invoice.collection.attempts = 1
    invoice.collection.save()
    return payment


def intent(status="requires_payment_method", amount=1500, **extra):
    return {
        "id": "pi_fromwebhook",
        "object": "payment_intent",
        "amount": amount,
        "status": status,
        **extra,
    }


def test_payment_failed_event_settles_the_pending_payment(client, pending_payment):
    failed = intent(
        last_payment_error={
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        }
    )
    response = post(client, event("evt_1", "payment_intent.payment_failed", failed))
    assert response.status_code == 200 and response.json()["applied"] is True
    pending_payment.refresh_from_db()
    assert (pending_payment.status, pending_payment.decline_reason) == (
        PaymentStatus.FAILED,
        "insufficient_funds",
    )
    assert pending_payment.invoice.subscription.status == SubscriptionStatus.PAST_DUE
    # a late success for the same intent finds nothing pending: nothing changes
    late = post(client, event("evt_2", "payment_intent.succeeded", intent(status="succeeded")))
    assert late.status_code == 200
    assert ProviderEvent.objects.get(event_id="evt_2").outcome == "no pending payment"
    pending_payment.refresh_from_db()
    assert pending_payment.status == PaymentStatus.FAILED
    assert pending_payment.invoice.status == InvoiceStatus.OPEN


def test_events_the_database_does_not_expect_change_nothing(client, pending_payment):
    other = {**intent(status="succeeded"), "id": "pi_unknown"}
    assert post(client, event("evt_3", "payment_intent.succeeded", other)).status_code == 200
    wrong_amount = intent(status="succeeded", amount=99999)
    assert post(client, event("evt_4", "payment_intent.succeeded", wrong_amount)).status_code == 200
    outcomes = dict(ProviderEvent.objects.values_list("event_id", "outcome"))
    assert outcomes == {"evt_3": "no pending payment", "evt_4": "amount mismatch"}
    pending_payment.refresh_from_db()
    assert pending_payment.status == PaymentStatus.PENDING


def test_refund_and_dispute_events_are_recorded_once(client, pending_payment):
    for _ in range(2):
        response = post(client, event("evt_5", "charge.dispute.created", {"id": "dp_1"}))
        assert response.status_code == 200
    assert post(client, event("evt_6", "charge.refunded", {"id": "ch_1"})).status_code == 200
    assert ProviderEvent.objects.filter(event_id="evt_5").count() == 1
    assert set(ProviderEvent.objects.values_list("outcome", flat=True)) == {"recorded"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_STRIPE_SIGNATURE": "t=1,v1=deadbeef"}, {"HTTP_STRIPE_SIGNATURE": "garbage"}],
)
def test_unsigned_or_badly_signed_events_are_400(client, stripe_settings, headers):
    payload = json.dumps(event("evt_7", "payment_intent.succeeded", intent())).encode()
    response = client.post(URL, payload, content_type="application/json", **headers)
    assert response.status_code == 400
    assert not ProviderEvent.objects.exists()


def test_signed_but_not_json_is_400(client, stripe_settings):
    payload = b"not json"
    response = client.post(
        URL,
        payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_webhook(payload),
    )
    assert response.status_code == 400
