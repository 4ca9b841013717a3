"""Linking: events sent with an `external_customer_id` before that customer existed are attached
to it when it appears (history included), in the transaction that creates it. A linked event
arrives as the customer's usage in that transaction (`arrival_txid`): for billing it is late
usage when its period already closed, like an event that arrived late.

The customer-reference slot lock (`metering.locks`) makes this race-free with concurrent ingests:
the link UPDATE runs after every in-flight ingest of that id has committed, and every later
ingest's INSERT sees the customer."""

from django.dispatch import receiver

from customers.hooks import external_id_assigned
from customers.models import Customer
from metering import stores


def link_customer_events(*, customer: Customer) -> int:
    """Attach the events sent earlier with the customer's external id; runs in the caller's
    transaction (the one that gives the customer its external id)."""
    if not customer.external_id:
        return 0
    linked = stores.current().link(customer=customer)
    if linked:
        customer.first_user_event_at = (
            Customer.objects.filter(pk=customer.pk)
            .values_list("first_user_event_at", flat=True)
            .get()
        )
    return linked


@receiver(external_id_assigned, dispatch_uid="metering.link_customer_events")
def _on_external_id_assigned(sender, customer: Customer, **kwargs) -> None:
    link_customer_events(customer=customer)
