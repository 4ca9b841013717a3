"""Payments staff record by hand (bank transfer, cheque): a succeeded payment with the provider
`manual`, so an invoice's payments always say how it was paid.

Two ways in. `record_manual_payment` (the admin's "Record payment") records the payment and
settles it like a charge (invoice paid, collection stopped, a past-due subscription recovered,
receipt). Billing's own "mark paid" (its admin action and `POST /v1/orders/{id}/mark-paid`) knows
nothing of payments: `on_invoice_status_changed` records the same payment from billing's signal,
inside billing's transaction."""

import logging
from functools import partial

from django.db import transaction
from django.db.models import F, Max
from django.db.models.functions import Greatest
from django.utils import timezone

from billing import subscriptions
from billing.models import Invoice, InvoiceStatus, SubscriptionStatus
from billing.money import format_amount, to_money
from core import audit
from payments import collection
from payments.errors import PaymentError
from payments.models import (
    CollectionState,
    InvoiceCollection,
    Payment,
    PaymentStatus,
    PaymentTrigger,
    Provider,
)
from payments.providers.base import ChargeResult, ChargeStatus

logger = logging.getLogger(__name__)


class ManualPaymentError(PaymentError):
    type = "manual_payment_error"


def _next_attempt(invoice_id, collection_row: InvoiceCollection | None, *, locked=True) -> int:
    """The attempt number after every recorded one; the collection counts it (when its row is
    locked here), so a later automatic attempt (there is none once paid) could never reuse it."""
    recorded = Payment.objects.filter(invoice_id=invoice_id).aggregate(n=Max("attempt"))["n"] or 0
    number = max(recorded, collection_row.attempts if collection_row else 0) + 1
    if collection_row is not None and locked:
        collection_row.attempts = number
        collection_row.save(update_fields=["attempts", "modified_at"])
    return number


def _manual_payment(invoice: Invoice, number: int, amount: int, reference: str, status: str):
    return Payment.objects.create(
        organization_id=invoice.organization_id,
        invoice=invoice,
        customer_id=invoice.customer_id,
        attempt=number,
        trigger=PaymentTrigger.RETRY_ADMIN,
        status=status,
        amount=amount,
        currency=invoice.currency,
        provider=Provider.MANUAL,
        # the bank transfer's or cheque's reference: what identifies the money received
        provider_payment_id=reference or None,
        idempotency_key=f"{invoice.pk}:{number}",
    )


def record_manual_payment(invoice: Invoice, amount: int, reference: str, staff) -> Payment:
    """Record money received outside the provider for the whole amount due (in minor units):
    the invoice becomes paid. Refused while a charge is under way (its outcome is not known
    yet), for an invoice that is not owed, and for any other amount."""
    reference = (reference or "").strip()
    with transaction.atomic():
        # the lock order of collection: the collection row, then the invoice
        collection_row = InvoiceCollection.objects.select_for_update().filter(pk=invoice.pk).first()
        invoice = Invoice.objects.select_for_update(of=("self",)).get(pk=invoice.pk)
        if invoice.status not in collection.COLLECTABLE:
            raise ManualPaymentError(
                f"{invoice.number} is {invoice.status}: there is nothing to pay",
                field=("invoice",),
            )
        payments = Payment.objects.filter(invoice_id=invoice.pk)
        if payments.filter(status=PaymentStatus.PENDING).exists():
            raise ManualPaymentError(
                f"A charge of {invoice.number} is under way; record the payment once it failed",
                field=("invoice",),
            )
        due = collection.amount_due(invoice)
        if amount != due:
            raise ManualPaymentError(
                f"The amount due is {format_amount(to_money(due, invoice.currency).amount, invoice.currency)}",
                field=("amount",),
            )
        payment = _manual_payment(
            invoice,
            _next_attempt(invoice.pk, collection_row),
            amount,
            reference,
            PaymentStatus.PENDING,
        )
        # settled like a charge: invoice paid, collection stopped, subscription recovered
        payment = collection.settle(payment.pk, ChargeResult(ChargeStatus.SUCCEEDED, ""))
        audit.record(
            payment,
            action="manual payment",
            created=True,
            changes={
                "invoice": (None, invoice.number),
                "amount": (
                    None,
                    format_amount(to_money(amount, invoice.currency).amount, invoice.currency),
                ),
                "reference": (None, reference),
            },
        )
    logger.info(
        "manual payment %s of %s recorded by %s (reference %r)",
        payment.pk,
        invoice.number,
        getattr(staff, "get_username", lambda: staff)(),
        reference,
    )
    return payment


def on_invoice_status_changed(sender, invoice, previous, **kwargs) -> None:
    """Billing marked an invoice paid without payments (its admin action or the API's
    mark-paid): record that payment, stop the collection and recover the subscription. A
    payment that already succeeded (a charge, `record_manual_payment`) is the invoice's; a
    charge under way is left to settle (it then finds the invoice paid and keeps the money for
    staff to refund, as when an invoice is voided meanwhile)."""
    if invoice.status != InvoiceStatus.PAID or collection.is_settling(invoice.pk):
        # not paid, or paid by the succeeded payment the collector is settling
        return
    # Billing holds the invoice's row lock here, and a collector takes the collection row and
    # then the invoice's: waiting for the collection row could deadlock. Whoever holds it is
    # either about to find the invoice paid (an attempt starting: it stops the collection) or
    # settling a pending charge (found below), so it is not waited for; the row is brought up
    # to date after the commit instead.
    collection_row = (
        InvoiceCollection.objects.select_for_update(skip_locked=True).filter(pk=invoice.pk).first()
    )
    locked = collection_row is not None
    if not locked:
        collection_row = InvoiceCollection.objects.filter(pk=invoice.pk).first()
    payments = Payment.objects.filter(invoice_id=invoice.pk)
    if payments.filter(status__in=(PaymentStatus.PENDING, PaymentStatus.SUCCEEDED)).exists():
        return
    amount = collection.amount_due(invoice)
    number = None
    if amount > 0:
        number = _next_attempt(invoice.pk, collection_row, locked=locked)
        _manual_payment(invoice, number, amount, "", PaymentStatus.SUCCEEDED)
    if collection_row is not None and collection_row.state != CollectionState.PAID:
        if locked:
            collection_row.state, collection_row.next_attempt_at = CollectionState.PAID, None
            collection_row.save(update_fields=["state", "next_attempt_at", "modified_at"])
        else:
            transaction.on_commit(partial(_collection_paid, invoice.pk, number or 0))
    subscription = invoice.subscription
    if subscription is not None and subscription.status == SubscriptionStatus.PAST_DUE:
        failing = InvoiceCollection.objects.filter(
            invoice__subscription=subscription,
            invoice__status__in=collection.COLLECTABLE,
            failures__gt=0,
        ).exclude(pk=invoice.pk)
        if not failing.exists():
            subscriptions.set_recovered(subscription)


def _collection_paid(invoice_id, attempts: int) -> None:
    """After billing's commit, holding no other lock: waiting for the collector is safe now.
    (A crash before it is harmless: the next attempt finds the invoice paid and stops.)"""
    InvoiceCollection.objects.filter(pk=invoice_id).update(
        state=CollectionState.PAID,
        next_attempt_at=None,
        attempts=Greatest(F("attempts"), attempts),
        modified_at=timezone.now(),
    )
