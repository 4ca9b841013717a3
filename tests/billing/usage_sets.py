"""The sets of events a subscription's invoices billed, reconstructed from the read boundaries
each cycle invoice recorded — an oracle for the exactly-once rule of avg/min/max/unique meters:
a period's set is its own events its close saw, plus the earlier events that close saw and the
previous one had not."""

from decimal import Decimal

from billing.models import BillingReason
from metering import aggregation, queries
from metering.queries import ReadBoundary, Window


def value_of(func: str, found: list) -> Decimal:
    numbers = [event.number for event in found if event.number is not None]
    if func == "count":
        return Decimal(len(found))
    if func == "unique":
        return Decimal(len({event.value_key for event in found}))
    partial = aggregation.Partial(
        event_count=len(found),
        numeric_count=len(numbers),
        numeric_sum=sum(numbers, Decimal(0)),
        numeric_min=min(numbers, default=None),
        numeric_max=max(numbers, default=None),
    )
    return aggregation.final_value(func, partial)


def seen(meter, customer, ranges, boundary) -> list:
    window = Window(None, meter, customer.pk, tuple(ranges))
    return queries.window_events(window, seen_by=boundary)


def sets_of(subscription, meter, start) -> list:
    """(line, the events its set holds) per cycle invoice, from the boundaries it recorded."""
    found = []
    invoices = subscription.invoices.filter(
        billing_reason=BillingReason.SUBSCRIPTION_CYCLE
    ).order_by("period_start")
    for invoice in invoices:
        boundary = ReadBoundary(invoice.usage_snapshot, invoice.usage_read_at)
        period = [(invoice.period_start, invoice.period_end)]
        events = seen(meter, subscription.customer, period, boundary)
        if invoice.late_since_snapshot is not None:
            earlier = [(start, invoice.period_start)]
            before = ReadBoundary(invoice.late_since_snapshot, invoice.late_since_at)
            known = {event.id for event in seen(meter, subscription.customer, earlier, before)}
            events += [
                event
                for event in seen(meter, subscription.customer, earlier, boundary)
                if event.id not in known
            ]
        found.append((invoice.lines.get(meter=meter), events))
    return found
