"""Refunds of paid invoices through the provider that collected them (or recorded only, for an
invoice paid manually), each with its credit note.

Never more than was paid. Under the invoice's row lock a new refund must fit in what is left:
the money collected and not yet refunded (billing's `refundable`) less the refunds still
pending. The refund is recorded `pending` and committed before the provider is asked, so of two
refunds made at once the second sees the first's reservation. The provider is called outside any
transaction, with the refund's id as idempotency key and in the refund's metadata; its answer
settles the refund once, under the invoice's and then the refund's row lock: `succeeded` issues
the credit note in the same transaction (billing raises the invoice's refunded amounts there),
a refusal makes it `failed` with nothing credited and releases its reservation.

A process that dies between the provider's answer and the settlement leaves a pending refund;
`reconcile_pending` (run by `collect_payments`) asks the provider for the refund carrying its id
once it is older than PAYMENTS_RECONCILE_AFTER — longer than any request to the provider can
take, so no call for it is still under way — and settles it from that: found, as the provider
says; not found, never made (`failed`)."""

import contextlib
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import credit_notes, subscriptions
from billing.errors import SubscriptionEnded
from billing.models import LIVE_STATUSES, CreditNoteKind, Invoice, InvoiceStatus
from billing.money import format_amount, to_minor, to_money
from core import audit
from core.errors import DomainError
from payments import providers, signals
from payments.errors import ProviderError, ProviderUnavailable, RefundError, RefundFailed
from payments.models import Payment, PaymentStatus, Provider, Refund, RefundReason, RefundStatus
from payments.providers.base import PaymentProvider, RefundResult

logger = logging.getLogger(__name__)

# the provider's refund statuses that are not an outcome yet
UNDECIDED = ("pending", "requires_action")
SUCCEEDED, FAILED = "succeeded", "failed"


def pending_amount(invoice: Invoice) -> int:
    """What refunds sent to the provider and not yet settled hold of the invoice, in minor
    units (billing's credit notes count it as reserved)."""
    pending = Refund.objects.filter(invoice=invoice, status=RefundStatus.PENDING).aggregate(
        total=Sum("amount")
    )["total"]
    return pending or 0


def left_to_refund(invoice: Invoice) -> int:
    """What a new refund of the invoice may still take, in minor units (read it under the
    invoice's row lock to rely on it)."""
    return max(credit_notes.refundable(invoice) - pending_amount(invoice), 0)


def _check(amount, reason: str) -> None:
    if reason not in RefundReason.values:
        raise RefundError(
            f"Unknown reason '{reason}': one of {', '.join(RefundReason.values)}",
            field=("reason",),
        )
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise RefundError("The amount must be a positive number of cents", field=("amount",))


def _collected_by(invoice: Invoice) -> Payment | None:
    """The provider payment the money goes back to (None: paid manually, recorded only)."""
    payment = Payment.objects.filter(invoice=invoice, status=PaymentStatus.SUCCEEDED).first()
    if payment is None or payment.provider == Provider.MANUAL or not payment.provider_payment_id:
        return None
    return payment


def _record(invoice, *, amount, reason, comment, revoke_benefits, metadata) -> Refund:
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update(of=("self",)).get(pk=invoice.pk)
        if invoice.status != InvoiceStatus.PAID:
            raise RefundError(
                f"Only a paid order can be refunded; {invoice.number or 'this draft'} is "
                f"{invoice.status}",
                field=("order_id",),
            )
        left = left_to_refund(invoice)
        if amount > left:
            raise RefundError(
                f"The amount {amount} is more than what is left to refund: {left}",
                field=("amount",),
            )
        if revoke_benefits and invoice.subscription_id and amount != left:
            raise RefundError(
                "revoke_benefits revokes the order's subscription: only with a refund of "
                f"everything left to refund ({left})",
                field=("revoke_benefits",),
            )
        payment = _collected_by(invoice)
        if payment is not None:
            # a provider that is not configured refuses here, before anything is written
            providers.get(payment.provider)
        refund = Refund.objects.create(
            organization_id=invoice.organization_id,
            invoice=invoice,
            customer_id=invoice.customer_id,
            payment=payment,
            status=RefundStatus.PENDING,
            reason=reason,
            amount=amount,
            tax_amount=credit_notes.tax_share(invoice, amount),
            currency=invoice.currency,
            comment=comment or "",
            revoke_benefits=revoke_benefits,
            metadata=metadata or {},
            provider=payment.provider if payment else Provider.MANUAL,
        )
        audit.record(
            refund,
            action="refund",
            created=True,
            changes={
                "invoice": (None, invoice.number),
                "amount": (
                    None,
                    format_amount(to_money(amount, invoice.currency).amount, invoice.currency),
                ),
                "reason": (None, reason),
                "revoke_benefits": (None, revoke_benefits),
            },
        )
        signals.refund_created.send(sender=Refund, refund=refund)
    return refund


def create_refund(
    invoice: Invoice,
    *,
    amount: int,
    reason: str,
    comment: str | None = "",
    revoke_benefits: bool = False,
    metadata: dict | None = None,
) -> Refund:
    """Refund `amount` minor units of a paid invoice; the settled refund. RefundError when the
    invoice isn't paid or the amount is more than is left (nothing written), RefundFailed when
    the provider refuses (the refund is kept `failed`), ProviderUnavailable when it does not
    answer (the refund stays `pending` until reconciliation learns what happened)."""
    _check(amount, reason)
    refund = _record(
        invoice,
        amount=amount,
        reason=reason,
        comment=comment,
        revoke_benefits=revoke_benefits,
        metadata=metadata,
    )
    if refund.payment is None:
        return settle(refund.pk, RefundResult(id="", status=SUCCEEDED))
    provider = providers.get(refund.payment.provider)
    try:
        result = _send(provider, refund)
    except ProviderUnavailable as exc:
        logger.warning("refund %s: the provider did not answer (%s)", refund.pk, exc)
        raise ProviderUnavailable(
            f"The payment provider did not answer: refund {refund.pk} stays pending until "
            "collect_payments asks the provider what happened"
        )
    except ProviderError as exc:
        settle(refund.pk, RefundResult(id="", status=FAILED), failure_message=exc.message)
        raise RefundFailed(
            f"The payment provider refused the refund ({exc.message}); refund {refund.pk} "
            "is failed and nothing was credited",
            field=("amount",),
        )
    return settle(refund.pk, result)


def _send(provider: PaymentProvider, refund: Refund) -> RefundResult:
    return provider.refund(
        provider_payment_id=refund.payment.provider_payment_id,
        amount=refund.amount,
        idempotency_key=f"refund:{refund.pk}",
        metadata={
            "meterline_refund_id": str(refund.pk),
            "meterline_invoice_id": str(refund.invoice_id),
        },
    )


def settle(refund_id, result: RefundResult, *, failure_message: str | None = None) -> Refund:
    """Apply the provider's outcome to a pending refund, once; a settled refund is left as is."""
    if result.status in UNDECIDED:
        if result.id:
            Refund.objects.filter(pk=refund_id, status=RefundStatus.PENDING).update(
                provider_refund_id=result.id, modified_at=timezone.now()
            )
        return Refund.objects.get(pk=refund_id)
    with transaction.atomic():
        invoice_id = Refund.objects.values_list("invoice_id", flat=True).get(pk=refund_id)
        # the lock order of recording: the invoice, then the refund
        invoice = Invoice.objects.select_for_update(of=("self",)).get(pk=invoice_id)
        refund = Refund.objects.select_for_update().get(pk=refund_id)
        if refund.status != RefundStatus.PENDING:
            return refund
        refund.settled_at = timezone.now()
        refund.provider_refund_id = result.id or refund.provider_refund_id
        if result.status == SUCCEEDED:
            note = credit_notes.issue(
                invoice,
                amount=refund.amount,
                kind=CreditNoteKind.REFUND,
                reason=refund.reason,
                comment=refund.comment,
                refund_id=refund.pk,
            )
            refund.status = RefundStatus.SUCCEEDED
            refund.credit_note = note
            refund.tax_amount = to_minor(note.tax_amount)
        else:
            refund.status = RefundStatus.FAILED
            refund.failure_message = failure_message or f"The provider's refund is {result.status}"
        refund.save()
        signals.refund_updated.send(sender=Refund, refund=refund)
    if refund.status == RefundStatus.SUCCEEDED and refund.revoke_benefits:
        _revoke_subscription(refund)
    return refund


def _revoke_subscription(refund: Refund) -> bool:
    # after the commit: revoking closes the period (its final invoice) in transactions of its
    # own; a crash before it is caught up by `revoke_skipped_benefits`
    invoice = Invoice.objects.select_related("subscription").get(pk=refund.invoice_id)
    if invoice.subscription is None or credit_notes.refundable(invoice):
        return False
    with contextlib.suppress(SubscriptionEnded):  # revoked meanwhile: nothing left to do
        subscriptions.revoke(invoice.subscription)
        return True
    return False


def revoke_skipped_benefits() -> int:
    """The revocations that succeeded refunds asked for and a crash after their settling commit
    skipped: subscriptions still live behind a fully refunded invoice with `revoke_benefits`."""
    skipped = Refund.objects.filter(
        status=RefundStatus.SUCCEEDED,
        revoke_benefits=True,
        invoice__subscription__status__in=LIVE_STATUSES,
    )
    return sum(_revoke_subscription(refund) for refund in skipped.order_by("created_at"))


# --- reconciliation -----------------------------------------------------------------------------


def reconcile(refund: Refund) -> Refund:
    """Settle a refund left pending from the provider's view of it."""
    if refund.payment_id is None:
        # recorded only: the record is the refund, its settlement was interrupted
        return settle(refund.pk, RefundResult(id="", status=SUCCEEDED))
    payment = Payment.objects.get(pk=refund.payment_id)
    found = providers.get(payment.provider).find_refund(
        provider_payment_id=payment.provider_payment_id, reference=str(refund.pk)
    )
    if found is None:
        return settle(
            refund.pk,
            RefundResult(id="", status=FAILED),
            failure_message="The provider never made this refund",
        )
    return settle(refund.pk, found)


def reconcile_pending(as_of: datetime | None = None) -> int:
    """Reconcile every refund pending for longer than PAYMENTS_RECONCILE_AFTER; how many were
    settled (a provider that doesn't answer is asked again on the next run)."""
    cutoff = (as_of or timezone.now()) - timedelta(seconds=settings.PAYMENTS_RECONCILE_AFTER)
    settled = 0
    stale = Refund.objects.filter(status=RefundStatus.PENDING, created_at__lte=cutoff)
    for refund in stale.order_by("created_at").iterator():
        try:
            settled += reconcile(refund).status != RefundStatus.PENDING
        except ProviderUnavailable as exc:
            logger.warning("refund %s not reconciled now: %s", refund.pk, exc)
        except DomainError as exc:
            # e.g. its credit note refused: one refund must not stop the others' reconciliation
            logger.error("refund %s can't be settled: %s", refund.pk, exc)
    revoke_skipped_benefits()
    return settled
