"""The exactly-once rule as a property: for random event timestamps, arrival orders and close
times (closes between arrivals included), and an optional plan change at a random moment, the
units billed across all invoices of a subscription (old and new prices together) equal the
meter's value over the events since the price started, for count and sum meters; and no invoice
changes after it was finalized."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import catalog, cycles, plan_changes, subscriptions
from billing.models import Invoice
from customers.models import Customer
from metering import meters
from metering.ingest import ingest_events
from tests.billing.conftest import at, unit_price

pytestmark = pytest.mark.django_db

START = at("2024-03-01T00:17:00")  # off the hour: rollup edges come from raw events
HORIZON = 5 * 24 * 3600  # events up to 5 daily periods after the start


class Rollback(Exception):
    pass


events = st.lists(
    st.tuples(
        st.integers(-24 * 3600, HORIZON),  # seconds from START (some before the price starts)
        st.one_of(st.integers(-3, 40).map(Decimal), st.decimals("-1", "10", places=3)),
    ),
    min_size=1,
    max_size=40,
)


def snapshot(organization):
    return {
        invoice.pk: (
            invoice.total.amount,
            invoice.subtotal.amount,
            tuple(
                (line.quantity, line.consumed_units, line.late_units, line.amount.amount)
                for line in invoice.lines.all()
            ),
        )
        for invoice in Invoice.objects.filter(organization=organization).prefetch_related("lines")
    }


@pytest.mark.parametrize("func", ["count", "sum"])
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), batch_events=events)
def test_units_billed_equal_units_since_the_price_started(org, func, data, batch_events):
    order = data.draw(st.permutations(range(len(batch_events))), label="arrival order")
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(order)), max_size=4), label="closes after arrival #")
    )
    close_offsets = sorted(
        data.draw(
            st.lists(
                st.integers(0, HORIZON + 3 * 24 * 3600), min_size=len(cuts), max_size=len(cuts)
            ),
            label="close times",
        )
    )
    change = data.draw(
        st.none() | st.tuples(st.integers(0, len(order)), st.integers(0, HORIZON)),
        label="plan change after arrival #, at second",
    )
    try:
        with transaction.atomic():
            check_example(
                org,
                func,
                batch_events,
                order,
                list(zip(cuts, close_offsets, strict=True)),
                change=change,
            )
            raise Rollback
    except Rollback:
        pass


def check_example(org, func, batch_events, order, closes, change=None):

    aggregation = {"func": "count"} if func == "count" else {"func": "sum", "property": "v"}
    meter = meters.create_meter(
        organization=org,
        name="m",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "u"}],
        },
        aggregation=aggregation,
    )
    product = catalog.create_product(
        organization=org, name="P", recurring_interval="day", prices=[unit_price(meter, 1)]
    )
    other = catalog.create_product(
        organization=org, name="Q", recurring_interval="day", prices=[unit_price(meter, 2)]
    )
    customer = Customer.objects.create(organization=org, email="p@example.com", external_id="p")
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=START
    )
    finalized = {}
    clock = [0]  # simulated now, in seconds from START: time only moves forward

    def close_at(offset):
        clock[0] = max(clock[0], offset)
        cycles.close_due(as_of=START + timedelta(seconds=offset))
        current = snapshot(org)
        for pk, values in finalized.items():
            assert current[pk] == values, "a finalized invoice changed"
        finalized.update(current)

    closes = list(closes)
    for arrived, index in enumerate(order):
        while closes and closes[0][0] <= arrived:
            close_at(closes.pop(0)[1])
        if change is not None and change[0] == arrived:
            clock[0] = max(clock[0], change[1])
            plan_changes.change_product(subscription, other, at=START + timedelta(seconds=clock[0]))
        offset, value = batch_events[index]
        ingest_events(
            organization=org,
            events=[
                {
                    "name": "u",
                    "external_customer_id": "p",
                    "timestamp": (START + timedelta(seconds=offset)).isoformat(),
                    "external_id": f"e{index}",
                    "metadata": {"v": value},
                }
            ],
        )
    for _, offset in closes:
        close_at(offset)
    # the last random close is at most 8 days in; two days later the period that received the
    # late arrivals after it is closed too (end + grace has passed)
    close_at(HORIZON + 5 * 24 * 3600)
    billed = sum(
        (
            line.consumed_units
            for invoice in subscription.invoices.prefetch_related("lines")
            for line in invoice.lines.all()
        ),
        Decimal(0),
    )
    since_start = [value for offset, value in batch_events if offset >= 0]
    expected = Decimal(len(since_start)) if func == "count" else sum(since_start, Decimal(0))
    assert billed == expected
