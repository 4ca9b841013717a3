"""Celery tasks: thin wrappers over payments services."""

from celery import shared_task
from django.utils import timezone

from payments import collection, emails, refunds


@shared_task(acks_late=True)
def collect_invoice(invoice_id: str) -> None:
    """After finalization: the first attempt (a duplicate delivery finds it made)."""
    collection.attempt(invoice_id)


@shared_task(acks_late=True)
def collect_due_payments() -> int:
    """Every minute (beat): due retries, reconciliation (payments and refunds), final actions."""
    now = timezone.now()
    attempted = collection.collect_due(now).attempted
    refunds.reconcile_pending(now)
    return attempted


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=30, max_retries=12)
def email_receipt(payment_id: str) -> None:
    emails.send_receipt(payment_id)


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=30, max_retries=12)
def email_payment_failed(payment_id: str, final: bool) -> None:
    emails.send_payment_failed(payment_id, final)


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=30, max_retries=12)
def email_invoice_notice(invoice_id: str, number: int) -> None:
    emails.send_invoice_notice(invoice_id, number)
