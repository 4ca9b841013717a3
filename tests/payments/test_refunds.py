"""Refunds end to end through polar-sdk on the live server, paid back through the real `stripe`
library against localstripe: partial then full refunds with their credit notes and webhooks, tax
pro rata, refusals that write nothing, a provider that refuses or doesn't answer (reconciled),
manual payments, revoking the subscription, and two refunds racing for what is left."""

import json
import threading
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from polar.v2026_10 import Polar
from polar.v2026_10.errors import HTTPValidationError
from polar.v2026_10.webhooks import validate_event

from billing.models import CreditNote, Invoice
from payments import refunds
from payments.models import Payment, PaymentStatus, Refund, RefundStatus
from tests.payments.test_scenario import attach, customer_with_card, first_order
from tests.webhooks.conftest import Receiver, deliver_pending
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = "4242424242424242"
REFUND_EVENTS = ["refund.created", "refund.updated", "order.refunded"]


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    server = Receiver()
    yield server
    server.close()


def paid_cycle_order(polar, localstripe, product, name="ada"):
    """A renewal paid 2904 by card: $29 + 7 units at 0.5 ¢."""
    customer = customer_with_card(polar, localstripe, name, GOOD)
    started = timezone.now() - timedelta(days=10)
    subscription = polar.subscriptions.create(
        product_id=product.id, customer_id=customer.id, started_at=started.isoformat()
    )
    polar.events.ingest(
        events=[
            {
                "name": "api.call",
                "external_customer_id": name,
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
    order = next(
        o
        for o in polar.orders.list(subscription_id=subscription.id).items
        if o.billing_reason == "subscription_cycle"
    )
    assert (order.total_amount, order.status) == (2904, "paid")
    return order


def provider_refunds(localstripe, order_id) -> list:
    payment = Payment.objects.get(invoice_id=order_id, status=PaymentStatus.SUCCEEDED)
    listed = localstripe.client.v1.refunds.list(
        params={"payment_intent": payment.provider_payment_id, "limit": 100}
    )
    return list(listed.auto_paging_iter())


def raw(polar):
    return polar._client._client


def refuse(call, **kwargs) -> list[dict]:
    with pytest.raises(HTTPValidationError) as refused:
        call(**kwargs)
    return [
        {"loc": list(item.loc), "msg": item.msg, "type": item.type}
        for item in refused.value.error.detail
    ]


def test_partial_then_full_refund_with_credit_notes_and_webhooks(
    polar, localstripe, product, receiver, live_org_token
):
    order = paid_cycle_order(polar, localstripe, product)
    endpoint = WebhookEndpoint.objects.create(
        organization=live_org_token[0], url=receiver.url, events=REFUND_EVENTS
    )
    prefix = order.invoice_number.rsplit("-", 1)[0]

    first = polar.refunds.create(
        order_id=order.id, reason="customer_request", amount=1000, comment="asked by mail"
    )
    assert (first.status, first.amount, first.tax_amount, first.currency) == (
        "succeeded",
        1000,
        0,
        "usd",
    )
    assert (first.order_id, first.subscription_id, first.customer_id) == (
        order.id,
        order.subscription_id,
        order.customer_id,
    )
    assert (first.reason, first.revoke_benefits, first.dispute) == ("customer_request", False, None)
    body = raw(polar).get(f"/v1/refunds/{first.id}").json()
    note = CreditNote.objects.get(refund_id=first.id)
    assert (body["credit_note_id"], body["comment"]) == (str(note.pk), "asked by mail")
    assert (note.number, note.kind, note.amount.amount) == (f"{prefix}-CN-0001", "refund", 10)
    after_first = polar.orders.get(id=order.id)
    assert (after_first.status, after_first.refunded_amount) == ("partially_refunded", 1000)

    second = polar.refunds.create(order_id=order.id, reason="service_disruption", amount=1904)
    assert (second.status, second.amount) == ("succeeded", 1904)
    assert CreditNote.objects.get(refund_id=second.id).number == f"{prefix}-CN-0002"
    after_second = polar.orders.get(id=order.id)
    assert (after_second.status, after_second.refunded_amount) == ("refunded", 2904)

    (problem,) = refuse(
        polar.refunds.create, order_id=order.id, reason="customer_request", amount=1
    )
    assert problem["loc"] == ["body", "amount"]
    assert problem["msg"] == "The amount 1 is more than what is left to refund: 0"
    assert Refund.objects.count() == 2 and CreditNote.objects.count() == 2

    assert sorted(r.amount for r in provider_refunds(localstripe, order.id)) == [1000, 1904]
    listed = polar.refunds.list(order_id=order.id).items
    assert [r.amount for r in listed] == [1904, 1000]  # newest first
    assert polar.refunds.list(customer_id=order.customer_id, succeeded=False).items == []
    assert len(polar.refunds.list(subscription_id=order.subscription_id).items) == 2

    deliver_pending()  # tasks run at once here: delivered already
    assert len(receiver.requests) == 6
    events = [validate_event(body, headers, endpoint.secret) for headers, body in receiver.requests]
    assert sorted(e.type for e in events) == [
        "order.refunded",
        "order.refunded",
        "refund.created",
        "refund.created",
        "refund.updated",
        "refund.updated",
    ]
    updated = sorted(
        ((e.data.amount, e.data.status) for e in events if e.type == "refund.updated"),
    )
    assert updated == [(1000, "succeeded"), (1904, "succeeded")]
    created = [e.data.status for e in events if e.type == "refund.created"]
    assert created == ["pending", "pending"]
    refunded = sorted(e.data.refunded_amount for e in events if e.type == "order.refunded")
    assert refunded == [1000, 2904]


def test_tax_is_refunded_pro_rata(polar, localstripe, stripe_settings, eager_tasks):
    response = raw(polar).post(
        "/v1/tax-rates/",
        json={"name": "MwSt", "country": "DE", "basis_points": 1900, "inclusive": False},
    )
    assert response.status_code == 201, response.text
    product = polar.products.create(
        name="Pro",
        recurring_interval="month",
        prices=[{"amount_type": "fixed", "price_amount": 2900}],
    )
    customer = polar.customers.create(
        email="de@example.com", external_id="de", billing_address={"country": "DE"}
    )
    attach(polar, customer.id, localstripe.card(GOOD))
    subscription = polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    order = first_order(polar, subscription.id)
    assert (order.status, order.subtotal_amount, order.tax_amount, order.total_amount) == (
        "paid",
        2900,
        551,
        3451,
    )
    # 1000 × 551 / 3451 = 159.66 → 160; the last refund takes exactly the tax left
    first = polar.refunds.create(order_id=order.id, reason="other", amount=1000)
    assert (first.amount, first.tax_amount) == (1000, 160)
    assert CreditNote.objects.get(refund_id=first.id).tax_amount.amount * 100 == 160
    rest = polar.refunds.create(order_id=order.id, reason="other", amount=2451)
    assert (rest.amount, rest.tax_amount) == (2451, 391)
    refunded = polar.orders.get(id=order.id)
    assert (refunded.status, refunded.refunded_amount, refunded.refunded_tax_amount) == (
        "refunded",
        3451,
        551,
    )
    assert sorted(r.amount for r in provider_refunds(localstripe, order.id)) == [1000, 2451]


def test_refusals_write_nothing(polar, localstripe, product, token_for):
    customer = customer_with_card(polar, localstripe, "eve", GOOD)
    subscription = polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    order = first_order(polar, subscription.id)
    assert order.status == "paid"
    for amount, kind in ((0, "greater_than_equal"), (-5, "greater_than_equal")):
        (problem,) = refuse(polar.refunds.create, order_id=order.id, reason="other", amount=amount)
        assert (problem["loc"], problem["type"]) == (["body", "amount"], kind)
    (over,) = refuse(polar.refunds.create, order_id=order.id, reason="other", amount=2901)
    assert over["msg"] == "The amount 2901 is more than what is left to refund: 2900"
    (reason,) = refuse(polar.refunds.create, order_id=order.id, reason="whim", amount=1)
    assert reason["loc"] == ["body", "reason"]
    (partial_revoke,) = refuse(
        polar.refunds.create, order_id=order.id, reason="other", amount=100, revoke_benefits=True
    )
    assert partial_revoke["loc"] == ["body", "revoke_benefits"]

    foreign_org, foreign_token = token_for("Other Org")
    with Polar(foreign_token, base_url=raw(polar).base_url) as intruder:
        response = raw(intruder).post(
            "/v1/refunds/", json={"order_id": order.id, "reason": "other", "amount": 1}
        )
        assert (response.status_code, response.json()["error"]) == (404, "ResourceNotFound")
        assert (
            raw(intruder).get("/v1/refunds/", params={"order_id": order.id}).json()["items"] == []
        )

    unpaid = Invoice.objects.get(pk=order.id)
    Invoice.objects.filter(pk=unpaid.pk).update(status="open")
    (not_paid,) = refuse(polar.refunds.create, order_id=order.id, reason="other", amount=1)
    assert not_paid["loc"] == ["body", "order_id"]
    assert not_paid["msg"] == f"Only a paid order can be refunded; {unpaid.number} is open"
    assert Refund.objects.count() == 0 and CreditNote.objects.count() == 0
    assert provider_refunds(localstripe, order.id) == []


def test_provider_refusal_fails_the_refund_and_credits_nothing(polar, localstripe, product):
    order = paid_cycle_order(polar, localstripe, product, name="fay")
    payment = Payment.objects.get(invoice_id=order.id, status=PaymentStatus.SUCCEEDED)
    real_intent = payment.provider_payment_id
    # localstripe refuses a refund of a charge it doesn't know
    Payment.objects.filter(pk=payment.pk).update(provider_payment_id="pi_unknown")
    response = raw(polar).post(
        "/v1/refunds/", json={"order_id": order.id, "reason": "other", "amount": 500}
    )
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["type"] == "refund_failed"
    assert problem["msg"].startswith("The payment provider refused the refund")
    (failed,) = Refund.objects.all()
    assert (failed.status, failed.credit_note_id) == (RefundStatus.FAILED, None)
    assert polar.orders.get(id=order.id).refunded_amount == 0

    # the failed refund reserved nothing: everything can still be refunded
    Payment.objects.filter(pk=payment.pk).update(provider_payment_id=real_intent)
    refund = polar.refunds.create(order_id=order.id, reason="other", amount=2904)
    assert refund.status == "succeeded"
    assert polar.refunds.list(order_id=order.id, succeeded=False).items[0].status == "failed"


def test_unanswered_refund_stays_pending_and_is_reconciled(polar, localstripe, product, settings):
    order = paid_cycle_order(polar, localstripe, product, name="gus")
    invoice = Invoice.objects.get(pk=order.id)

    # the provider does not answer: pending, its amount still reserved
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    response = raw(polar).post(
        "/v1/refunds/", json={"order_id": order.id, "reason": "other", "amount": 2000}
    )
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "PaymentProviderUnavailable"
    (lost,) = Refund.objects.all()
    assert lost.status == RefundStatus.PENDING
    settings.STRIPE_API_BASE = localstripe.url
    (problem,) = refuse(polar.refunds.create, order_id=order.id, reason="other", amount=905)
    assert problem["msg"] == "The amount 905 is more than what is left to refund: 904"

    # a worker killed after the provider refunded: recorded and paid back, never settled
    killed = refunds._record(
        invoice, amount=904, reason="other", comment="", revoke_benefits=False, metadata={}
    )
    refunds._send(refunds.providers.get("stripe"), Refund.objects.get(pk=killed.pk))
    assert Refund.objects.get(pk=killed.pk).status == RefundStatus.PENDING
    # the refunds in flight hold all 2904: a balance credit note can't take any of it
    response = raw(polar).post(
        "/v1/credit-notes/", json={"order_id": order.id, "amount": 1, "reason": "other"}
    )
    assert response.status_code == 422, response.text
    assert "0 left to credit" in response.text
    assert not CreditNote.objects.exists()

    out = StringIO()
    soon = timezone.now() + timedelta(seconds=settings.PAYMENTS_RECONCILE_AFTER - 60)
    call_command("collect_payments", "--as-of", soon.isoformat(), stdout=out)
    assert "reconciled 0 pending refund(s)" in out.getvalue()
    later = timezone.now() + timedelta(seconds=settings.PAYMENTS_RECONCILE_AFTER + 60)
    call_command("collect_payments", "--as-of", later.isoformat(), stdout=out)
    assert "reconciled 2 pending refund(s)" in out.getvalue()

    lost.refresh_from_db()
    assert (lost.status, lost.failure_message) == (
        RefundStatus.FAILED,
        "The provider never made this refund",
    )
    settled = Refund.objects.get(pk=killed.pk)
    assert settled.status == RefundStatus.SUCCEEDED and settled.provider_refund_id
    assert CreditNote.objects.get(refund_id=killed.pk).amount.amount * 100 == 904
    assert polar.orders.get(id=order.id).refunded_amount == 904
    assert [r.amount for r in provider_refunds(localstripe, order.id)] == [904]


def test_manual_payment_is_refunded_by_record_only(polar, settings, eager_tasks):
    settings.STRIPE_SECRET_KEY = ""
    settings.PAYMENTS_COLLECTION = "manual"
    product = polar.products.create(
        name="Basic",
        recurring_interval="month",
        prices=[{"amount_type": "fixed", "price_amount": 900}],
    )
    customer = polar.customers.create(email="hal@example.com")
    subscription = polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    order = first_order(polar, subscription.id)
    assert raw(polar).post(f"/v1/orders/{order.id}/mark-paid").status_code == 200
    refund = polar.refunds.create(
        order_id=order.id, reason="duplicate", amount=900, metadata={"ticket": 42}
    )
    assert (refund.status, refund.amount, refund.metadata) == ("succeeded", 900, {"ticket": 42})
    stored = Refund.objects.get(pk=refund.id)
    assert (stored.provider, stored.payment_id, stored.provider_refund_id) == ("manual", None, None)
    assert polar.orders.get(id=order.id).status == "refunded"


def test_full_refund_with_revoke_benefits_revokes_the_subscription(polar, localstripe, product):
    customer = customer_with_card(polar, localstripe, "ian", GOOD)
    subscription = polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    order = first_order(polar, subscription.id)
    refund = polar.refunds.create(
        order_id=order.id, reason="fraudulent", amount=2900, revoke_benefits=True
    )
    assert (refund.status, refund.revoke_benefits) == ("succeeded", True)
    assert polar.subscriptions.get(id=subscription.id).status == "canceled"


def test_a_revocation_skipped_by_a_crash_is_caught_up_by_collect_payments(
    polar, localstripe, product, monkeypatch
):
    customer = customer_with_card(polar, localstripe, "kim", GOOD)
    subscription = polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    order = first_order(polar, subscription.id)

    def crash(refund):
        raise SystemExit("killed after the refund's settling commit")

    with monkeypatch.context() as patched:
        patched.setattr(refunds, "_revoke_subscription", crash)
        with pytest.raises(SystemExit):
            refunds.create_refund(
                Invoice.objects.get(pk=order.id),
                amount=2900,
                reason="fraudulent",
                comment="",
                revoke_benefits=True,
                metadata={},
            )
    assert Refund.objects.get().status == RefundStatus.SUCCEEDED
    assert polar.subscriptions.get(id=subscription.id).status == "active"
    call_command("collect_payments", stdout=StringIO())
    assert polar.subscriptions.get(id=subscription.id).status == "canceled"
    # once: a second run finds nothing to revoke
    assert refunds.revoke_skipped_benefits() == 0


def test_concurrent_refunds_never_refund_more_than_was_paid(
    polar, localstripe, product, live_url, live_org_token
):
    order = paid_cycle_order(polar, localstripe, product, name="jo")
    start = threading.Barrier(3)
    answers: list = []

    def refund(amount):
        with Polar(live_org_token[1], base_url=live_url) as client:
            start.wait()
            response = raw(client).post(
                "/v1/refunds/", json={"order_id": order.id, "reason": "other", "amount": amount}
            )
            answers.append((amount, response.status_code, response.json()))

    for _ in range(2):
        threads = [threading.Thread(target=refund, args=(amount,)) for amount in (1500, 1600, 1700)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    statuses = sorted(status for _, status, _ in answers)
    assert statuses == [201, 422, 422, 422, 422, 422], json.dumps(answers)
    (winner,) = [amount for amount, status, _ in answers if status == 201]
    refused = [body["detail"][0]["msg"] for _, status, body in answers if status == 422]
    assert all(msg.endswith(f"left to refund: {2904 - winner}") for msg in refused), refused
    assert [r.amount for r in provider_refunds(localstripe, order.id)] == [winner]
    assert polar.orders.get(id=order.id).refunded_amount == winner
