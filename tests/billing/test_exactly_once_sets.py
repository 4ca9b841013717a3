"""The exactly-once rule as a property, for all six aggregations, with ingests that run at the
same moment as closes and plan changes A → B → A.

Each example draws a history on daily periods: batches of events (random timestamps, some in
periods already closed, each with its own `unique` key), closes at increasing times, batches
ingested by a second thread while a close runs (the two released together), and plan changes
between two products pricing the same six meters. Ingests and closes commit for real: arrival
is what the read boundaries compare. Then:

- count, sum and unique (every key distinct): what all lines of all invoices billed — old and
  new prices, marginal lines of a replaced price included — adds up to the meter's value over
  every event since the subscription started: each event in exactly one set;
- without plan changes, each cycle invoice's sets rebuilt from the boundaries it recorded
  partition the events, and every line of every aggregation equals its value over its set;
- no finalized invoice ever changes.
"""

import threading
import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import catalog, cycles, plan_changes, subscriptions
from billing.models import Invoice, InvoiceLine
from customers.models import Customer, Organization
from metering import meters
from metering.ingest import ingest_events
from tests.billing.conftest import at, named, unit_price
from tests.billing.test_close_during_ingest import AGGREGATIONS
from tests.billing.usage_sets import sets_of, value_of

pytestmark = pytest.mark.django_db(transaction=True)

START = at("2025-06-01T00:17:00")  # off the hour: rollup edges come from raw events
DAY = 86400
HORIZON = 4 * DAY

batch = st.lists(
    st.tuples(st.integers(0, HORIZON - 1), st.integers(-5, 500)), min_size=1, max_size=6
)
step = st.one_of(
    st.tuples(st.just("ingest"), batch),
    st.tuples(st.just("close"), st.integers(0, 2 * DAY)),
    st.tuples(st.just("race"), batch, st.integers(0, 2 * DAY)),
    st.tuples(st.just("change"), st.integers(0, DAY)),
)


class History:
    """One example's organization, subscription and simulated clock (seconds from START)."""

    def __init__(self):
        # the database is not emptied between examples: each has its own organization
        organization = Organization.objects.create(name=f"Property {uuid.uuid4().hex[:12]}")
        self.organization = organization
        self.meters = {
            func: meters.create_meter(
                organization=organization, name=func, filter=named("u"), aggregation=definition
            )
            for func, definition in AGGREGATIONS.items()
        }
        self.products = [
            catalog.create_product(
                organization=organization,
                name=name,
                recurring_interval="day",
                prices=[unit_price(meter, cents) for meter in self.meters.values()],
            )
            for name, cents in (("A", 1), ("B", 2))
        ]
        customer = Customer.objects.create(
            organization=organization, email="p@example.com", external_id="p"
        )
        self.subscription = subscriptions.create_subscription(
            customer=customer, product=self.products[0], started_at=START
        )
        self.clock = 0
        self.sent = 0
        self.values = []
        self.finalized = {}

    def ingest(self, events) -> None:
        rows = []
        for offset, value in events:
            self.sent += 1
            rows.append(
                {
                    "name": "u",
                    "external_customer_id": "p",
                    "timestamp": (START + timedelta(seconds=offset)).isoformat(),
                    "external_id": f"e{self.sent}",
                    "metadata": {"v": value, "k": f"key-{self.sent}"},
                }
            )
            self.values.append(value)
        ingest_events(organization=self.organization, events=rows)

    def close(self, advance: int) -> None:
        self.clock += advance
        cycles.close_due(as_of=START + timedelta(seconds=self.clock))
        self.check_finalized_unchanged()

    def race(self, events, advance: int) -> None:
        """The batch is ingested by another thread while this one closes."""
        together = threading.Barrier(2)

        def ingest():
            try:
                together.wait()
                self.ingest(events)
            finally:
                connection.close()

        other = threading.Thread(target=ingest)
        other.start()
        together.wait()
        self.close(advance)
        other.join()

    def change(self, advance: int) -> None:
        self.clock += advance
        subscription = cycles.live_subscriptions().get(pk=self.subscription.pk)
        other = next(p for p in self.products if p.pk != subscription.product_id)
        plan_changes.change_product(subscription, other, at=START + timedelta(seconds=self.clock))

    def check_finalized_unchanged(self) -> None:
        current = {
            invoice.pk: (
                invoice.total.amount,
                tuple(
                    (line.quantity, line.consumed_units, line.amount.amount)
                    for line in invoice.lines.all()
                ),
            )
            for invoice in Invoice.objects.filter(organization=self.organization).prefetch_related(
                "lines"
            )
        }
        for pk, values in self.finalized.items():
            assert current[pk] == values, "a finalized invoice changed"
        self.finalized.update(current)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(step, min_size=1, max_size=8))
def test_every_event_is_billed_in_exactly_one_set(steps):
    with_changes = any(kind == "change" for kind, *_ in steps)
    history = History()
    for kind, *args in steps:
        getattr(history, kind)(*args)
    # the last period with events, and the one after it for what arrived after its close
    history.clock = max(history.clock, HORIZON) + 3 * DAY
    history.close(0)

    lines = InvoiceLine.objects.filter(invoice__subscription=history.subscription)
    billed = {
        func: sum(
            lines.filter(meter=history.meters[func]).values_list("consumed_units", flat=True),
            Decimal(0),
        )
        for func in ("count", "sum", "unique")
    }
    n = len(history.values)
    assert billed == {"count": n, "sum": sum(history.values), "unique": n}
    if with_changes:
        return  # the sets of a price's spans are what the lines above add up
    subscription = history.subscription
    for func, meter in history.meters.items():
        sets = sets_of(subscription, meter, START)
        memberships = Counter(event.id for _line, events in sets for event in events)
        assert sum(memberships.values()) == n and set(memberships.values()) <= {1}
        for line, events in sets:
            assert line.consumed_units == value_of(func, events), (func, line.period_start)
