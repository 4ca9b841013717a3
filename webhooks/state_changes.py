"""`customer.state_changed`, debounced: every change to a customer's state marks the customer
(one row per customer, first mark wins); the marks that are due are taken in one statement and
each becomes one event. So a burst of changes yields one event per customer per debounce window."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from webhooks.models import PendingStateChange


def mark(organization_id, customer_id) -> bool:
    """True when this call started a new debounce window (the caller schedules its flush)."""
    due_at = timezone.now() + timedelta(seconds=settings.WEBHOOK_STATE_DEBOUNCE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {PendingStateChange._meta.db_table} (customer_id, organization_id, due_at)"
            " VALUES (%s, %s, %s) ON CONFLICT (customer_id) DO NOTHING",
            [customer_id, organization_id, due_at],
        )
        return cursor.rowcount == 1


def take_due(*, now: datetime | None = None) -> list:
    """(organization id, customer id) of the customers whose window has ended, removed from the pending set (caller's transaction)."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {PendingStateChange._meta.db_table} WHERE due_at <= %s"
            " RETURNING organization_id, customer_id",
            [now],
        )
        return cursor.fetchall()
