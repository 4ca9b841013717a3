"""Collection rules around the edges: billing's mark paid racing a collector (lock order), the
payment emails sent at most once, and send_invoice collection (emailed, due, reminders, never
charged on schedule: paid with "Pay now" or by saving a card)."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils.formats import date_format

from billing import catalog, invoices, subscriptions
from billing.catalog import PriceSpec
from billing.models import Invoice, InvoiceStatus
from customers.services import create_customer
from payments import collection, emails, methods, tasks
from payments.models import (
    CollectionState,
    InvoiceCollection,
    OrganizationPayments,
    Payment,
    PaymentStatus,
    PaymentTrigger,
)

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = "4242424242424242"
DECLINED = "4000000000000341"


@pytest.fixture
def plan(organization, stripe_settings):
    return catalog.create_product(
        organization=organization,
        name="Plan",
        prices=[PriceSpec(amount_type="fixed", price_amount=2900)],
    )


def subscribe(organization, plan, localstripe, email, card=GOOD):
    customer = create_customer(organization=organization, email=email)
    if card:
        methods.set_default_method(customer, localstripe.card(card))
    subscription = subscriptions.create_subscription(customer=customer, product=plan)
    return customer, subscription, subscription.invoices.get()


def lock_waiters() -> int:
    with connection.cursor() as cursor:
        # pg_stat_activity is a snapshot per transaction: asked inside one, it must be cleared
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_mark_paid_racing_a_collector_neither_deadlocks_nor_records_twice(
    organization, plan, localstripe
):
    """Billing's mark paid holds the invoice's lock when payments' receiver runs; a collector
    holding the collection row waits for that invoice lock. The receiver does not wait for the
    collection row, so both finish: one manual payment, no charge."""
    customer, _, invoice = subscribe(organization, plan, localstripe, "race@example.com")
    row = InvoiceCollection.objects.get(pk=invoice.pk)
    assert (row.state, row.attempts) == (CollectionState.COLLECTING, 0)
    errors: list = []
    outcome: dict = {}
    billing_locked = threading.Event()

    def collector():
        try:
            billing_locked.wait(10)
            outcome["attempt"] = collection.attempt(invoice.pk)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    def billing():
        try:
            with transaction.atomic():
                locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
                billing_locked.set()
                # the collector has the collection row and waits for this invoice lock
                deadline = time.monotonic() + 10
                while lock_waiters() == 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                outcome["waiting"] = lock_waiters()
                invoices.mark_paid(locked)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=collector), threading.Thread(target=billing)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert outcome == {"waiting": 1, "attempt": None}

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.provider, payment.status, payment.amount, payment.attempt) == (
        "manual",
        PaymentStatus.SUCCEEDED,
        2900,
        1,
    )
    row.refresh_from_db()
    assert (row.state, row.next_attempt_at, row.attempts) == (CollectionState.PAID, None, 1)
    assert localstripe.charges(customer.billing_profile.provider_customer_id) == []
    assert collection.collect_due().attempted == 0


def test_a_receipt_and_a_failure_email_are_sent_once_each_when_their_task_runs_twice(
    organization, plan, localstripe, mailoutbox
):
    _, _, paid = subscribe(organization, plan, localstripe, "paid@example.com")
    _, _, declined = subscribe(organization, plan, localstripe, "declined@example.com", DECLINED)
    receipt = collection.attempt(paid.pk)
    failure = collection.attempt(declined.pk)
    assert (receipt.status, failure.status) == (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED)

    for _ in range(2):
        assert tasks.email_receipt.run(str(receipt.pk)) is None
        tasks.email_payment_failed.run(str(failure.pk), False)
    assert [(m.to, m.subject) for m in mailoutbox] == [
        (["paid@example.com"], f"Acme: receipt for invoice {paid.number}"),
        (["declined@example.com"], f"Acme: payment for invoice {declined.number} failed"),
    ]
    assert "your payment of 29.00 USD" in mailoutbox[0].body
    receipt.refresh_from_db()
    failure.refresh_from_db()
    assert receipt.emailed_at is not None and failure.emailed_at is not None
    assert emails.send_receipt(receipt.pk) is False


def test_send_invoice_is_emailed_due_then_overdue_never_charged_and_paid_from_the_portal(
    organization, plan, localstripe, mailoutbox
):
    OrganizationPayments.objects.create(
        organization=organization, collection="send_invoice", days_until_due=14
    )
    # a saved card is not charged on schedule in this mode
    customer, subscription, invoice = subscribe(organization, plan, localstripe, "si@example.com")
    stripe_id = customer.billing_profile.provider_customer_id
    row = InvoiceCollection.objects.get(pk=invoice.pk)
    due = invoice.finalized_at + timedelta(days=14)
    assert (row.mode, row.due_at, row.next_attempt_at, row.notices_sent) == (
        "send_invoice",
        due,
        due,
        0,
    )
    for _ in range(2):
        tasks.email_invoice_notice.run(str(invoice.pk), 1)
    (notice,) = mailoutbox
    due_text = date_format(due, "DATE_FORMAT")
    assert notice.subject == f"Acme: invoice {invoice.number} is due on {due_text}"
    assert f"invoice {invoice.number} for 29.00 USD, due on {due_text}" in notice.body
    assert f"/portal/acme/invoices/{invoice.pk}" in notice.body

    assert collection.collect_due(due - timedelta(seconds=1)).attempted == 0
    row.refresh_from_db()
    assert row.failures == 0
    # the due date passes unpaid: overdue, past due, a reminder, and still no charge
    assert collection.collect_due(due).attempted == 0
    row.refresh_from_db()
    subscription.refresh_from_db()
    assert (row.state, row.failures, row.next_attempt_at) == (
        CollectionState.COLLECTING,
        1,
        due + timedelta(days=2),
    )
    assert (subscription.status, subscription.past_due_at) == ("past_due", due)
    tasks.email_invoice_notice.run(str(invoice.pk), 2)
    assert mailoutbox[1].subject == f"Acme: invoice {invoice.number} is overdue"
    assert f"was due on {due_text} and is still unpaid" in mailoutbox[1].body
    assert collection.collect_due(due + timedelta(days=2)).attempted == 0
    row.refresh_from_db()
    assert (row.failures, row.next_attempt_at) == (2, due + timedelta(days=7))
    assert Payment.objects.filter(invoice=invoice).count() == 0
    assert localstripe.charges(stripe_id) == []

    # the customer's "Pay now" charges the saved card
    payment = collection.retry_now(invoice, trigger=PaymentTrigger.RETRY_CUSTOMER)
    assert (payment.status, payment.amount, payment.trigger) == (
        "succeeded",
        2900,
        "retry_customer",
    )
    invoice.refresh_from_db()
    subscription.refresh_from_db()
    row.refresh_from_db()
    assert (invoice.status, subscription.status, row.state) == ("paid", "active", "paid")
    assert [c.amount for c in localstripe.succeeded_charges(stripe_id)] == [2900]
    # a reminder due meanwhile is not sent for a paid invoice
    assert emails.send_invoice_notice(invoice.pk, 3) is False
    assert len(mailoutbox) == 2


def test_send_invoice_pay_now_declined_keeps_the_due_date_and_a_new_card_pays(
    organization, plan, localstripe
):
    OrganizationPayments.objects.create(
        organization=organization, collection="send_invoice", days_until_due=14
    )
    customer, subscription, invoice = subscribe(
        organization, plan, localstripe, "sd@example.com", DECLINED
    )
    payment = collection.retry_now(invoice, trigger=PaymentTrigger.RETRY_CUSTOMER)
    assert payment.status == PaymentStatus.FAILED
    row = InvoiceCollection.objects.get(pk=invoice.pk)
    subscription.refresh_from_db()
    assert (row.failures, row.next_attempt_at, subscription.status) == (
        0,
        invoice.finalized_at + timedelta(days=14),
        "active",
    )
    # saving a new card is the consent to pay what "Pay now" could not: charged at once
    methods.set_default_method(customer, localstripe.card(GOOD))
    (retried,) = collection.retry_after_new_method(customer)
    assert (retried.status, retried.amount, retried.attempt) == ("succeeded", 2900, 2)
    row.refresh_from_db()
    assert row.state == CollectionState.PAID
