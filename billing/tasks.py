"""Celery tasks: thin wrappers over billing services."""

from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import cycles, documents, packs, thresholds
from billing.models import AutoTopUp


@shared_task(acks_late=True)
def close_due_cycles() -> int:
    """Every minute (beat): fan out one task per batch of due subscriptions."""
    as_of = timezone.now()
    ids = cycles.due_subscription_ids(as_of=as_of)
    size = settings.BILLING_CLOSE_BATCH_SIZE
    batches = [ids[i : i + size] for i in range(0, len(ids), size)]
    with transaction.atomic():
        for batch in batches:
            close_subscriptions.delay_on_commit([str(pk) for pk in batch], as_of.isoformat())
    return len(batches)


@shared_task(acks_late=True)
def close_subscriptions(subscription_ids: list[str], as_of: str) -> int:
    """Close the due periods of one batch; safe to run twice (one invoice per period)."""
    report = cycles.close_batch(subscription_ids, as_of=datetime.fromisoformat(as_of))
    return report.closed


# SMTP failures (smtplib's errors are OSErrors) are retried with growing delays; the email is
# still sent at most once (documents.email_invoice)
@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=30, max_retries=12)
def deliver_invoice(invoice_id: str) -> None:
    """After an invoice is finalized: store its PDF and email it to the customer."""
    documents.deliver(invoice_id)


def enqueue_delivery(sender, invoice, **kwargs) -> None:
    deliver_invoice.delay_on_commit(str(invoice.pk))


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=30, max_retries=12)
def deliver_credit_note(credit_note_id: str) -> None:
    """After a credit note is issued: store its PDF and email it to the customer (once)."""
    documents.email_credit_note(credit_note_id)


def enqueue_credit_note_delivery(sender, credit_note, **kwargs) -> None:
    deliver_credit_note.delay_on_commit(str(credit_note.pk))


@shared_task(acks_late=True)
def check_spend_thresholds(organization_id: str, customer_ids: list[str]) -> int:
    """After an ingest commits: invoice the charges of these customers that reached their
    spend threshold. Safe to run twice (the re-check under the subscription's lock)."""
    return len(thresholds.check(organization_id=organization_id, customer_ids=customer_ids))


@shared_task(acks_late=True)
def sweep_spend_thresholds() -> int:
    """Periodically (beat): the same check over every subscription with a threshold, for
    crossings whose ingest-time check was lost."""
    return len(thresholds.check())


def enqueue_threshold_check(sender, organization, batch, **kwargs) -> None:
    # one indexed query per ingest for organizations without thresholds
    if thresholds.organization_uses_thresholds(organization.pk):
        customer_ids = batch.customer_ids
        if customer_ids:
            check_spend_thresholds.delay_on_commit(
                str(organization.pk), [str(pk) for pk in customer_ids]
            )


@shared_task(acks_late=True)
def check_credit_top_ups(customer_ids: list[str]) -> int:
    """After an ingest commits (or a close): buy the packs of these customers' auto top-ups
    whose balance fell below the threshold. Safe to run twice (re-checked under a row lock)."""
    return len(packs.check_top_ups(customer_ids))


def enqueue_top_up_check(sender, organization, batch, **kwargs) -> None:
    # one indexed query per ingest for organizations without auto top-ups
    if AutoTopUp.objects.filter(customer__organization_id=organization.pk, is_active=True).exists():
        customer_ids = batch.customer_ids
        if customer_ids:
            check_credit_top_ups.delay_on_commit([str(pk) for pk in customer_ids])
