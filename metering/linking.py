"""Linking: events sent with an `external_customer_id` before that customer existed are attached
to it when it appears (history included), in the transaction that creates it. A linked event
arrives as the customer's usage in that transaction (`arrival_txid`): for billing it is late
usage when its period already closed, like an event that arrived late.

The customer-reference slot lock (`metering.locks`) makes this race-free with concurrent ingests:
the link UPDATE runs after every in-flight ingest of that id has committed, and every later
ingest's INSERT sees the customer."""

from django.dispatch import receiver

from core.db import bound_cursor
from customers.hooks import external_id_assigned
from customers.models import Customer
from metering import locks, rollups
from metering.ingest import CURRENT_TXID_SQL, FIRST_EVENT_SQL

LINK_SQL = """
UPDATE metering_event SET customer_id = %(customer)s, arrival_txid = __TXID__
WHERE organization_id = %(org)s AND external_customer_id = %(external_id)s AND customer_id IS NULL
RETURNING id
""".replace("__TXID__", CURRENT_TXID_SQL)


def link_customer_events(*, customer: Customer) -> int:
    """Attach the events sent earlier with the customer's external id; runs in the caller's
    transaction (the one that gives the customer its external id)."""
    if not customer.external_id:
        return 0
    with bound_cursor() as cursor:
        locks.lock_external_ids(
            cursor, customer.organization_id, [customer.external_id], exclusive=True
        )
        cursor.execute(
            LINK_SQL,
            {
                "customer": customer.pk,
                "org": customer.organization_id,
                "external_id": customer.external_id,
            },
        )
        ids = [row[0] for row in cursor.fetchall()]
        if ids:
            rollups.after_insert(cursor, organization_id=customer.organization_id, event_ids=ids)
            cursor.execute(FIRST_EVENT_SQL, {"ids": ids})  # same lock order as ingestion
    if ids:
        customer.first_user_event_at = (
            Customer.objects.filter(pk=customer.pk)
            .values_list("first_user_event_at", flat=True)
            .get()
        )
    return len(ids)


@receiver(external_id_assigned, dispatch_uid="metering.link_customer_events")
def _on_external_id_assigned(sender, customer: Customer, **kwargs) -> None:
    link_customer_events(customer=customer)
