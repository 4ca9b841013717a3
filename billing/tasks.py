"""Celery tasks: thin wrappers over billing services."""

from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import cycles, documents


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
