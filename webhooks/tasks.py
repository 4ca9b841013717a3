"""Celery tasks: thin wrappers over webhooks.delivery and webhooks.state_changes."""

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webhooks import alerts, delivery, payloads, state_changes


def enqueue(events) -> None:
    """Send the events once the current transaction commits."""
    for event in events:
        deliver_event.delay_on_commit(str(event.pk))


@shared_task(acks_late=True)
def deliver_event(event_id: str) -> None:
    next_at = delivery.attempt(event_id)
    if next_at is not None:
        countdown = max(0.0, (next_at - timezone.now()).total_seconds())
        deliver_event.apply_async((event_id,), countdown=countdown)


@shared_task(acks_late=True)
def deliver_due_events() -> int:
    """Every minute (beat): re-enqueue due events whose task was lost (worker crash, broker
    restart); an attempt that is not due or already taken is a no-op."""
    ids = delivery.due_event_ids(now=timezone.now())
    for event_id in ids:
        deliver_event.delay(str(event_id))
    return len(ids)


def schedule_state_flush() -> None:
    """After the commit, flush once the debounce window has passed."""
    transaction.on_commit(
        lambda: flush_state_changes.apply_async(countdown=settings.WEBHOOK_STATE_DEBOUNCE_SECONDS)
    )


@shared_task(acks_late=True)
def flush_state_changes() -> int:
    """Send the `customer.state_changed` events whose debounce window ended (also every minute
    from beat, so a lost task only delays them)."""
    sent = []
    with transaction.atomic():
        for organization_id, customer_id in state_changes.take_due(now=timezone.now()):
            endpoints = delivery.subscribed_endpoints(organization_id, "customer.state_changed")
            data = payloads.customer_state_data(customer_id) if endpoints else None
            if data is not None:
                sent += delivery.record(endpoints, "customer.state_changed", data)
        enqueue(sent)
    return len(sent)


@shared_task(acks_late=True)
def evaluate_alerts(organization_id: str, customer_ids: list[str]) -> int:
    """After an ingest commits: fire the usage alerts its customers crossed."""
    with transaction.atomic():
        events = alerts.evaluate(organization_id, customer_ids)
        enqueue(events)
    return len(events)
