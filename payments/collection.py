"""Collecting finalized invoices: an attempt per invoice at a time, the dunning schedule after a
failure, recovery, the final action, and reconciliation of attempts a crash left pending.

Exactly once. An attempt is recorded `pending` (under the invoice's collection row lock, with
the key `<invoice id>:<attempt>`) before the provider is called; the provider's charge id is
committed before the charge is confirmed; only a `pending` payment settles, under its row lock.
The database allows one pending and one succeeded payment per invoice. So a second worker finds
the pending attempt and leaves it; a worker killed after confirming leaves a pending payment
with its charge id, which reconciliation settles from the provider's view; an attempt killed
before confirming is cancelled at the provider before it is counted as never made."""

import logging
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing import cycles, invoices, subscriptions
from billing.errors import SubscriptionEnded
from billing.models import (
    LIVE_STATUSES,
    BillingReason,
    Invoice,
    InvoiceStatus,
    SubscriptionStatus,
)
from billing.money import to_minor
from core.outbox import enqueue_many_on_commit, enqueue_on_commit
from payments import providers
from payments.configuration import resolved
from payments.errors import PaymentError, ProviderError, ProviderUnavailable
from payments.models import (
    BillingProfile,
    Collection,
    CollectionState,
    InvoiceCollection,
    Payment,
    PaymentStatus,
    PaymentTrigger,
    Provider,
)
from payments.providers.base import ChargeResult, ChargeStatus

logger = logging.getLogger(__name__)

COLLECTABLE = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)
# payments.tasks, named: the tasks call this module
COLLECT_TASK = "payments.tasks.collect_invoice"
RECEIPT_TASK = "payments.tasks.email_receipt"
FAILED_TASK = "payments.tasks.email_payment_failed"
# attempts someone asked for, outside the dunning schedule
ON_REQUEST = (
    PaymentTrigger.RETRY_CUSTOMER,
    PaymentTrigger.RETRY_ADMIN,
    PaymentTrigger.RETRY_PAYMENT_METHOD_UPDATE,
)
NOTICE_TASK = "payments.tasks.email_invoice_notice"
# collect_due's due invoices per batch (two shared transactions a batch)
BATCH = 50
# provider calls at once within a batch
CHARGE_THREADS = 4


# the invoices whose succeeded payments are being settled here: billing's paid signal then
# comes from this module, and manual.py's receiver has nothing to record
_settling: ContextVar = ContextVar("payments_settling", default=frozenset())


def is_settling(invoice_id) -> bool:
    return invoice_id in _settling.get()


def amount_due(invoice: Invoice) -> int:
    """What the customer still owes on the invoice, in minor units: the total less the
    customer balance applied at finalization."""
    return to_minor(invoice.amount_due)


# --- finalization ------------------------------------------------------------------------------


def on_invoice_finalized(sender, invoice, **kwargs) -> None:
    """Automatic collection: the invoice is due for collection now; the attempt runs after the
    finalizing transaction commits (a zero amount is paid by it without calling the provider).
    send_invoice: the invoice is emailed with its due date and the portal link to pay it; the
    collection's first step is the due date."""
    _, collection, days_until_due = resolved(invoice.organization_id)
    finalized = invoice.finalized_at or timezone.now()
    if collection == Collection.AUTOMATIC:
        InvoiceCollection.objects.create(
            invoice=invoice, organization_id=invoice.organization_id, next_attempt_at=finalized
        )
        enqueue_on_commit(COLLECT_TASK, [str(invoice.pk)], {})
    elif collection == Collection.SEND_INVOICE:
        due = finalized + timedelta(days=days_until_due)
        owed = amount_due(invoice) > 0
        InvoiceCollection.objects.create(
            invoice=invoice,
            organization_id=invoice.organization_id,
            mode=Collection.SEND_INVOICE,
            due_at=due,
            # nothing owed: the next run marks it paid
            next_attempt_at=due if owed else finalized,
        )
        if owed:
            enqueue_on_commit(NOTICE_TASK, [str(invoice.pk), 1], {})


# --- one attempt -------------------------------------------------------------------------------


def _trigger(invoice: Invoice, collection: InvoiceCollection) -> str:
    if collection.failures:
        return PaymentTrigger.RETRY_DUNNING
    if invoice.billing_reason in (BillingReason.SUBSCRIPTION_CYCLE, BillingReason.SPEND_THRESHOLD):
        return PaymentTrigger.SUBSCRIPTION_CYCLE
    return PaymentTrigger.PURCHASE


def _start(invoice_id, *, as_of: datetime, skip_locked: bool, trigger: str | None):
    """Transaction 1: the pending payment and the customer's billing profile (None when there
    is nothing to do here). An attempt on request (`trigger`: staff, the customer, a new
    method) runs whenever it is asked; a scheduled one when it is due."""
    with transaction.atomic():
        collection = (
            InvoiceCollection.objects.select_for_update(skip_locked=skip_locked)
            .filter(pk=invoice_id)
            .first()
        )
        if collection is None or collection.state != CollectionState.COLLECTING:
            return None
        scheduled = trigger is None
        if scheduled and (collection.next_attempt_at is None or collection.next_attempt_at > as_of):
            return None
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        if invoice.status not in COLLECTABLE:
            collection.state = (
                CollectionState.PAID
                if invoice.status == InvoiceStatus.PAID
                else CollectionState.STOPPED
            )
            collection.next_attempt_at = None
            collection.save(update_fields=["state", "next_attempt_at", "modified_at"])
            return None
        payments = Payment.objects.filter(invoice_id=invoice_id)
        if payments.filter(status__in=(PaymentStatus.PENDING, PaymentStatus.SUCCEEDED)).exists():
            return None
        amount = amount_due(invoice)
        if amount <= 0:
            invoices.mark_paid(invoice)
            collection.state, collection.next_attempt_at = CollectionState.PAID, None
            collection.save(update_fields=["state", "next_attempt_at", "modified_at"])
            return None
        if scheduled and collection.mode == Collection.SEND_INVOICE:
            # the due date (or a reminder's date) passed unpaid: a dunning step without a charge
            _dunning_step(collection, invoice, as_of)
            return None
        provider, _, _ = resolved(invoice.organization_id)
        if provider == Provider.MANUAL:
            # the organization collects by hand now: staff record the payment
            collection.state, collection.next_attempt_at = CollectionState.STOPPED, None
            collection.save(update_fields=["state", "next_attempt_at", "modified_at"])
            return None
        profile = BillingProfile.objects.filter(customer_id=invoice.customer_id).first()
        payment = _next_attempt(collection, invoice, provider, profile, trigger)
        collection.save(update_fields=["attempts", "modified_at"])
        payment.save(force_insert=True)
        return payment, profile


def _next_attempt(collection, invoice, provider: str, profile, trigger: str | None) -> Payment:
    """The collection's next attempt as a pending payment (unsaved; the collection's count
    taken): one idempotency key per attempt, the method it is made with."""
    collection.attempts += 1
    return Payment(
        organization_id=invoice.organization_id,
        invoice=invoice,
        customer_id=invoice.customer_id,
        attempt=collection.attempts,
        trigger=trigger or _trigger(invoice, collection),
        status=PaymentStatus.PENDING,
        amount=amount_due(invoice),
        currency=invoice.currency,
        provider=provider,
        idempotency_key=f"{invoice.pk}:{collection.attempts}",
        method_brand=profile.brand if profile else "",
        method_last4=profile.last4 if profile else "",
    )


def attempt(
    invoice_id,
    *,
    as_of: datetime | None = None,
    skip_locked: bool = False,
    trigger: str | None = None,
) -> Payment | None:
    """Collect the invoice if its collection is due at `as_of` and no attempt is under way.
    The settled payment, or None when nothing was attempted here."""
    as_of = as_of or timezone.now()
    started = _start(invoice_id, as_of=as_of, skip_locked=skip_locked, trigger=trigger)
    if started is None:
        return None
    payment, profile = started
    result = _charge(payment, profile)
    if result is None:
        return Payment.objects.get(pk=payment.pk)
    return settle(payment.pk, result, as_of=as_of, invoice_id=payment.invoice_id)


def _charge(payment: Payment, profile: BillingProfile | None) -> ChargeResult | None:
    """The provider's outcome of a pending payment's charge; None when the payment is left as
    it is (settled by reconciliation meanwhile, or its confirmation unanswered)."""
    prepared = _prepare(payment, profile)
    if isinstance(prepared, ChargeResult):
        return prepared
    # Committed before the confirmation: a crash after it leaves an id to reconcile by. If
    # reconciliation already gave up on this attempt, the charge is never confirmed.
    stored = Payment.objects.filter(pk=payment.pk, status=PaymentStatus.PENDING).update(
        provider_payment_id=prepared, modified_at=timezone.now()
    )
    if not stored:
        _cancel_quietly(providers.get(payment.provider), prepared)
        return None
    return _confirm(payment, prepared)


def _prepare(payment: Payment, profile: BillingProfile | None) -> str | ChargeResult:
    """The provider's charge for a pending payment, not confirmed: its id, or the outcome when
    there is nothing to confirm."""
    if profile is None or not profile.default_method_id or profile.provider != payment.provider:
        return ChargeResult(
            ChargeStatus.FAILED,
            "",
            decline_code="payment_method_missing",
            decline_message="The customer has no payment method.",
        )
    try:
        return providers.get(payment.provider).prepare_charge(
            amount=payment.amount,
            currency=payment.currency,
            provider_customer_id=profile.provider_customer_id,
            method_id=profile.default_method_id,
            idempotency_key=payment.idempotency_key,
            metadata={
                "meterline_invoice_id": str(payment.invoice_id),
                "meterline_payment_id": str(payment.pk),
            },
        )
    except ProviderUnavailable as exc:
        # whatever the provider created was not confirmed: nothing was charged
        return ChargeResult(ChargeStatus.NOT_CONFIRMED, "", "provider_unavailable", exc.message)
    except ProviderError as exc:
        return ChargeResult(ChargeStatus.FAILED, "", exc.code or "provider_error", exc.message)


def _confirm(payment: Payment, intent_id: str) -> ChargeResult | None:
    """Only once the charge's id is committed with the pending payment."""
    try:
        return providers.get(payment.provider).confirm_charge(
            provider_payment_id=intent_id, idempotency_key=payment.idempotency_key
        )
    except ProviderError as exc:
        logger.warning("payment %s: confirmation unanswered (%s); reconciled later", payment, exc)
        return None


def _cancel_quietly(provider, intent_id: str) -> None:
    try:
        provider.cancel_charge(intent_id)
    except ProviderError as exc:
        logger.warning("charge %s could not be cancelled: %s", intent_id, exc)


# --- settling -----------------------------------------------------------------------------------


def settle(
    payment_id, result: ChargeResult, *, as_of: datetime | None = None, invoice_id=None
) -> Payment:
    """Transaction 2: apply the provider's outcome to a pending payment, once. A payment that
    is no longer pending (settled by a webhook, a reconciliation or another worker) is left.
    `invoice_id`: the payment's invoice, when the caller knows it."""
    now = timezone.now()
    as_of = as_of or now
    if result.status == ChargeStatus.PROCESSING:
        return Payment.objects.get(pk=payment_id)
    with transaction.atomic():
        if invoice_id is None:
            invoice_id = Payment.objects.values_list("invoice_id", flat=True).get(pk=payment_id)
        # the lock order of transaction 1: the collection, then the payment
        collection = InvoiceCollection.objects.select_for_update().filter(pk=invoice_id).first()
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        if payment.status != PaymentStatus.PENDING:
            return payment
        payment.settled_at = now
        if result.provider_payment_id:
            payment.provider_payment_id = result.provider_payment_id
        if result.status == ChargeStatus.SUCCEEDED:
            payment.status = PaymentStatus.SUCCEEDED
            payment.save(
                update_fields=["status", "settled_at", "provider_payment_id", "modified_at"]
            )
            _paid(payment, collection)
        elif result.status == ChargeStatus.NOT_CONFIRMED:
            payment.status = PaymentStatus.FAILED
            payment.not_attempted = True
            payment.decline_reason = result.decline_code or "not_confirmed"
            payment.decline_message = result.decline_message or "The charge was never confirmed."
            payment.save()
            if collection is not None and collection.state == CollectionState.COLLECTING:
                # not a decline: tried again by the next run, after the reconciliation delay
                collection.next_attempt_at = as_of + timedelta(
                    seconds=settings.PAYMENTS_RECONCILE_AFTER
                )
                collection.save(update_fields=["next_attempt_at", "modified_at"])
        else:
            payment.status = PaymentStatus.FAILED
            payment.decline_reason = result.decline_code or "card_declined"
            payment.decline_message = result.decline_message
            payment.save()
            _failed(payment, collection, as_of)
    return payment


def _paid(payment: Payment, collection: InvoiceCollection | None) -> None:
    if collection is not None:
        collection.state, collection.next_attempt_at = CollectionState.PAID, None
        collection.save(update_fields=["state", "next_attempt_at", "modified_at"])
    _pay_invoices([payment])


def _pay_invoices(succeeded: list[Payment]) -> None:
    """The invoices of succeeded payments become paid (the collector's own paid signal, so
    manual.py records nothing), their subscriptions recover, their receipts are queued."""
    # locked before their status is read: billing's mark paid may be committing meanwhile
    locked = list(
        Invoice.objects.select_for_update(of=("self",))
        .select_related("subscription")
        .filter(pk__in=[payment.invoice_id for payment in succeeded])
        .order_by("pk")
    )
    owed = [invoice for invoice in locked if invoice.status in COLLECTABLE]
    owed_ids = frozenset(invoice.pk for invoice in owed)
    token = _settling.set(owed_ids)
    try:
        invoices.mark_many_paid(owed)
    finally:
        _settling.reset(token)
    by_invoice = {payment.invoice_id: payment for payment in succeeded}
    for invoice in locked:
        if invoice.pk not in owed_ids:
            # charged for an invoice voided meanwhile: the money is kept for staff to refund
            logger.error(
                "payment %s succeeded for invoice %s in status %s",
                by_invoice[invoice.pk].pk,
                invoice.pk,
                invoice.status,
            )
        _recover(invoice)
    enqueue_many_on_commit(RECEIPT_TASK, [[str(payment.pk)] for payment in succeeded])


def _recover(invoice: Invoice) -> None:
    """A past-due subscription recovers when none of its other invoices is failing."""
    subscription = invoice.subscription
    if subscription is not None and subscription.status == SubscriptionStatus.PAST_DUE:
        failing = InvoiceCollection.objects.filter(
            invoice__subscription=subscription,
            invoice__status__in=COLLECTABLE,
            failures__gt=0,
        ).exclude(pk=invoice.pk)
        if not failing.exists():
            subscriptions.set_recovered(subscription)


def next_retry(failures: int, failed_at: datetime) -> datetime | None:
    """When to retry after the `failures`-th declined attempt (None: no retry left)."""
    schedule = settings.DUNNING_SCHEDULE
    if failures > len(schedule):
        return None
    return failed_at + timedelta(days=schedule[failures - 1])


def _failed(payment: Payment, collection: InvoiceCollection | None, as_of: datetime) -> None:
    invoice = Invoice.objects.select_related("subscription").get(pk=payment.invoice_id)
    final = False
    if collection is None:
        _set_past_due(invoice, as_of)
    elif collection.mode == Collection.SEND_INVOICE:
        # the customer's own attempt (or staff's) failed: the invoice keeps its due date and
        # reminders; only the date passing makes it overdue
        pass
    elif payment.trigger in ON_REQUEST and collection.failures:
        # asked for while dunning (Pay now, staff, a new card): a decline leaves the schedule
        # where it was, so clicking again can't bring the final action closer. A collection
        # without a next attempt had run out of retries before this one.
        if collection.next_attempt_at is None:
            collection.state = CollectionState.EXHAUSTED
            collection.save(update_fields=["state", "modified_at"])
    else:
        final = _dunning_step(collection, invoice, as_of)
    enqueue_on_commit(FAILED_TASK, [str(payment.pk), final], {})


def _set_past_due(invoice: Invoice, as_of: datetime) -> None:
    if (
        invoice.subscription is not None
        and invoice.subscription.status == SubscriptionStatus.ACTIVE
    ):
        subscriptions.set_past_due(invoice.subscription, at=as_of)


def _dunning_step(collection: InvoiceCollection, invoice: Invoice, as_of: datetime) -> bool:
    """A declined attempt, or send_invoice's date passed unpaid: the next step of the schedule
    (none left: exhausted, the final action), the subscription past due. True when final."""
    collection.failures += 1
    collection.first_failed_at = collection.first_failed_at or as_of
    if collection.state == CollectionState.COLLECTING:
        collection.next_attempt_at = next_retry(collection.failures, as_of)
        if collection.next_attempt_at is None:
            collection.state = CollectionState.EXHAUSTED
    collection.save()
    _set_past_due(invoice, as_of)
    final = collection.state == CollectionState.EXHAUSTED
    if final and settings.DUNNING_FINAL_ACTION == "cancel" and invoice.status == InvoiceStatus.OPEN:
        invoices.mark_uncollectible(invoice)
    if collection.mode == Collection.SEND_INVOICE:
        # reminder n is notice n + 1 (notice 1 told the due date)
        enqueue_on_commit(NOTICE_TASK, [str(invoice.pk), collection.failures + 1], {})
    return final


def apply_final_actions() -> int:
    """Cancel: revoke the subscriptions of exhausted collections (after the failure's commit;
    also catches a revocation a crash skipped). Revoking issues the final invoice, which is
    itself collected."""
    if settings.DUNNING_FINAL_ACTION != "cancel":
        return 0
    revoked = 0
    exhausted = (
        InvoiceCollection.objects.filter(
            state=CollectionState.EXHAUSTED,
            invoice__status=InvoiceStatus.UNCOLLECTIBLE,
            invoice__subscription__status__in=LIVE_STATUSES,
        )
        .values_list("invoice__subscription", flat=True)
        .distinct()
    )
    for subscription_id in list(exhausted):
        subscription = cycles.live_subscriptions().get(pk=subscription_id)
        try:
            subscriptions.revoke(subscription)
            revoked += 1
        except SubscriptionEnded:
            pass
    return revoked


# --- reconciliation -----------------------------------------------------------------------------


def reconcile(payment: Payment, *, as_of: datetime | None = None) -> Payment:
    """Settle a payment left pending from the provider's view of its charge."""
    if not payment.provider_payment_id:
        # the charge id was never committed, so the charge was never confirmed (the id is
        # committed first); a late worker finds the payment settled and cancels its charge
        result = ChargeResult(ChargeStatus.NOT_CONFIRMED, "", "not_confirmed", None)
        return settle(payment.pk, result, as_of=as_of, invoice_id=payment.invoice_id)
    provider = providers.get(payment.provider)
    result = provider.retrieve_charge(payment.provider_payment_id)
    if result.status == ChargeStatus.NOT_CONFIRMED:
        # cancel first: a worker still about to confirm then fails instead of charging
        try:
            provider.cancel_charge(payment.provider_payment_id)
        except ProviderError:
            result = provider.retrieve_charge(payment.provider_payment_id)
    return settle(payment.pk, result, as_of=as_of, invoice_id=payment.invoice_id)


def stale_pending(as_of: datetime):
    cutoff = as_of - timedelta(seconds=settings.PAYMENTS_RECONCILE_AFTER)
    return Payment.objects.filter(status=PaymentStatus.PENDING, created_at__lte=cutoff)


def void_blocker(invoice: Invoice) -> str | None:
    """Billing asks before voiding (under the invoice's lock, which recording an attempt takes
    too): a charge under way could still take the money for a void invoice."""
    if Payment.objects.filter(invoice_id=invoice.pk, status=PaymentStatus.PENDING).exists():
        return "a charge of it is under way; void it once that charge has settled"
    return None


# --- the scheduled job --------------------------------------------------------------------------


@dataclass
class CollectReport:
    reconciled: int = 0
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    revoked: int = 0


def due_invoice_ids(as_of: datetime, limit: int | None = None) -> list:
    due = InvoiceCollection.objects.filter(
        state=CollectionState.COLLECTING, next_attempt_at__lte=as_of
    ).order_by("next_attempt_at")
    ids = due.values_list("invoice_id", flat=True)
    return list(ids[:limit] if limit else ids)


def collect_due(as_of: datetime | None = None) -> CollectReport:
    """Reconcile stale pending payments, run every due attempt (rows another collector holds
    are skipped: it is collecting them), then the final actions."""
    as_of = as_of or timezone.now()
    report = CollectReport()
    for payment in stale_pending(as_of).iterator():
        try:
            reconcile(payment, as_of=as_of)
            report.reconciled += 1
        except ProviderError as exc:
            # asked again by the next run; the payment stays pending meanwhile
            logger.warning("payment %s not reconciled now: %s", payment.pk, exc)
    ids = due_invoice_ids(as_of)
    with ThreadPoolExecutor(CHARGE_THREADS) as calls:
        batches = [
            _collect_batch(ids[n : n + BATCH], as_of, calls) for n in range(0, len(ids), BATCH)
        ]
    for batch in batches:
        for payment in batch:
            report.attempted += 1
            report.succeeded += payment.status == PaymentStatus.SUCCEEDED
            report.failed += payment.status == PaymentStatus.FAILED
    report.revoked = apply_final_actions()
    return report


def _collect_batch(ids: list, as_of: datetime, calls: ThreadPoolExecutor) -> list[Payment]:
    """The attempts of a batch of due invoices, each as `attempt` makes it, with the database
    work shared: one transaction records the pending payments of the plain cases (the others
    go through `attempt` one by one); their charges are created, their ids committed together,
    then each is confirmed; one transaction settles the ones that succeeded. The provider
    calls of a batch run in `calls`' threads, which touch no database: one call's wait is
    another's work."""
    started, others = _start_batch(ids, as_of)
    done = [payment for i in others if (payment := attempt(i, as_of=as_of, skip_locked=True))]
    outcomes, prepared = [], {}
    charges = calls.map(lambda item: _prepare(*item), started)
    for (payment, _), result in zip(started, charges, strict=True):
        if isinstance(result, ChargeResult):
            outcomes.append((payment, result))
        else:
            prepared[payment.pk] = (payment, result)
    if prepared:
        with transaction.atomic():
            # reconciliation may have given up on an attempt meanwhile: its charge is not
            # confirmed
            pending = list(
                Payment.objects.select_for_update()
                .filter(pk__in=prepared, status=PaymentStatus.PENDING)
                .order_by("pk")
            )
            now = timezone.now()
            for row in pending:
                row.provider_payment_id, row.modified_at = prepared[row.pk][1], now
            Payment.objects.bulk_update(pending, ["provider_payment_id", "modified_at"])
        stored = {row.pk for row in pending}
        for payment, intent_id in prepared.values():
            if payment.pk not in stored:
                _cancel_quietly(providers.get(payment.provider), intent_id)
                done.append(Payment.objects.get(pk=payment.pk))
        confirm = [item for item in prepared.values() if item[0].pk in stored]
        results = calls.map(lambda item: _confirm(*item), confirm)
        outcomes.extend(zip([payment for payment, _ in confirm], results, strict=True))
    succeeded = []
    for payment, result in outcomes:
        if result is None:
            done.append(Payment.objects.get(pk=payment.pk))
        elif result.status == ChargeStatus.SUCCEEDED:
            succeeded.append((payment, result))
        else:
            done.append(settle(payment.pk, result, as_of=as_of, invoice_id=payment.invoice_id))
    if succeeded:
        done.extend(_settle_succeeded(succeeded))
    return done


def _start_batch(ids: list, as_of: datetime) -> tuple[list, list]:
    """Transaction 1 of a batch: under the collection and invoice row locks (rows another
    collector holds are skipped), the pending payments of the due automatic collections whose
    invoice is owed and has no attempt under way or succeeded, and their billing profiles.
    Every other locked invoice is left to `attempt`, after this commit."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            InvoiceCollection.objects.select_for_update(skip_locked=True)
            .filter(pk__in=ids)
            .order_by("pk")
        )
        locked = {
            invoice.pk: invoice
            for invoice in Invoice.objects.select_for_update()
            .filter(pk__in=[row.pk for row in rows])
            .order_by("pk")
        }
        busy = set(
            Payment.objects.filter(
                invoice_id__in=locked,
                status__in=(PaymentStatus.PENDING, PaymentStatus.SUCCEEDED),
            ).values_list("invoice_id", flat=True)
        )
        providers_of = {}
        plain, others = [], []
        for row in rows:
            invoice = locked[row.pk]
            if invoice.organization_id not in providers_of:
                providers_of[invoice.organization_id] = resolved(invoice.organization_id)[0]
            if (
                row.state == CollectionState.COLLECTING
                and row.next_attempt_at is not None
                and row.next_attempt_at <= as_of
                and row.mode == Collection.AUTOMATIC
                and invoice.status in COLLECTABLE
                and invoice.pk not in busy
                and amount_due(invoice) > 0
                and providers_of[invoice.organization_id] != Provider.MANUAL
            ):
                plain.append((row, invoice))
            elif invoice.pk not in busy:
                others.append(row.pk)
        profiles = {
            profile.customer_id: profile
            for profile in BillingProfile.objects.filter(
                customer_id__in={invoice.customer_id for _, invoice in plain}
            )
        }
        payments = []
        for row, invoice in plain:
            row.modified_at = now
            provider = providers_of[invoice.organization_id]
            profile = profiles.get(invoice.customer_id)
            payments.append(_next_attempt(row, invoice, provider, profile, None))
        if plain:
            InvoiceCollection.objects.bulk_update(
                [row for row, _ in plain], ["attempts", "modified_at"]
            )
            Payment.objects.bulk_create(payments)
    return [(payment, profiles.get(payment.customer_id)) for payment in payments], others


def _settle_succeeded(charged: list) -> list[Payment]:
    """Transaction 2 of a batch, for the charges that succeeded: `settle` with a succeeded
    outcome for each, in the same lock order (collections, payments, invoices), the updates
    shared. A payment no longer pending is left as it is."""
    now = timezone.now()
    outcome = {payment.pk: result for payment, result in charged}
    with transaction.atomic():
        list(
            InvoiceCollection.objects.select_for_update()
            .filter(pk__in=[payment.invoice_id for payment, _ in charged])
            .order_by("pk")
        )
        payments = list(
            Payment.objects.select_for_update().filter(pk__in=outcome).order_by("invoice_id")
        )
        pending = [payment for payment in payments if payment.status == PaymentStatus.PENDING]
        if not pending:
            return payments
        for payment in pending:
            payment.status, payment.settled_at, payment.modified_at = (
                PaymentStatus.SUCCEEDED,
                now,
                now,
            )
            payment.provider_payment_id = (
                outcome[payment.pk].provider_payment_id or payment.provider_payment_id
            )
        Payment.objects.bulk_update(
            pending, ["status", "settled_at", "provider_payment_id", "modified_at"]
        )
        paid_ids = [payment.invoice_id for payment in pending]
        InvoiceCollection.objects.filter(pk__in=paid_ids).update(
            state=CollectionState.PAID, next_attempt_at=None, modified_at=now
        )
        _pay_invoices(pending)
    return payments


# --- retries on request -------------------------------------------------------------------------


def retry_after_new_method(customer) -> list[Payment]:
    """A new default method: the customer's invoices whose collection failed are tried again
    at once (an exhausted one too, while it is still owed). With send_invoice, saving a card is
    the customer's consent to pay: an overdue invoice, or one whose "Pay now" was declined, is
    charged; its due date and reminders stay if this charge fails too."""
    now = timezone.now()
    retried = []
    candidates = (
        InvoiceCollection.objects.filter(
            Q(state=CollectionState.COLLECTING) | Q(state=CollectionState.EXHAUSTED),
            Q(failures__gt=0)
            | Q(mode=Collection.SEND_INVOICE, invoice__payments__status=PaymentStatus.FAILED),
            invoice__customer=customer,
            invoice__status__in=COLLECTABLE,
        )
        .values_list("invoice_id", flat=True)
        .distinct()
    )
    for invoice_id in list(candidates):
        rows = InvoiceCollection.objects.filter(
            pk=invoice_id, state__in=(CollectionState.COLLECTING, CollectionState.EXHAUSTED)
        )
        # the dunning schedule stays as it is: this attempt is on request (see _failed)
        rows.update(state=CollectionState.COLLECTING)
        payment = attempt(invoice_id, as_of=now, trigger=PaymentTrigger.RETRY_PAYMENT_METHOD_UPDATE)
        if payment is not None:
            retried.append(payment)
    return retried


def retry_now(invoice: Invoice, *, trigger: str = PaymentTrigger.RETRY_ADMIN) -> Payment:
    """Staff's "retry payment now" (and the customer's "Pay now", `retry_customer`): an attempt
    at once, whatever the dunning schedule says (an exhausted collection is collecting again).
    Refused for an invoice that is not owed, when the organization collects manually, and while
    an attempt is under way."""
    provider, _, _ = resolved(invoice.organization_id)
    if provider == Provider.MANUAL:
        raise PaymentError(
            "The organization collects payments manually: record the payment instead",
            field=("invoice",),
        )
    now = timezone.now()
    with transaction.atomic():
        row, _ = InvoiceCollection.objects.select_for_update().get_or_create(
            invoice_id=invoice.pk,
            defaults={"organization_id": invoice.organization_id, "next_attempt_at": now},
        )
        current = Invoice.objects.only("status", "number").get(pk=invoice.pk)
        if current.status not in COLLECTABLE:
            raise PaymentError(
                f"{current.number} is {current.status}: there is nothing to collect",
                field=("invoice",),
            )
        if Payment.objects.filter(invoice_id=invoice.pk, status=PaymentStatus.PENDING).exists():
            raise PaymentError(
                f"A charge of {current.number} is already under way", field=("invoice",)
            )
        row.state = CollectionState.COLLECTING
        if row.mode == Collection.AUTOMATIC and not row.failures:
            # not dunning yet: a decline here starts the schedule. While dunning (and with
            # send_invoice's due date) a declined attempt on request leaves the schedule be.
            row.next_attempt_at = now
        row.save(update_fields=["state", "next_attempt_at", "modified_at"])
    payment = attempt(invoice.pk, as_of=now, trigger=trigger)
    if payment is None:
        raise PaymentError(
            f"{invoice.number}: another collector is attempting it", field=("invoice",)
        )
    return payment
