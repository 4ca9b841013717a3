"""Customer state reads ready all-time meters with one grouped rollup query; the numbers must be
exactly those of the general read path (rollups + raw edges), for every aggregation."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers.services import create_customer
from metering import customer_meters, meters
from metering.ingest import ingest_events
from metering.models import CustomerMeter

AGGREGATIONS = [
    {"func": "count"},
    {"func": "sum", "property": "v"},
    {"func": "avg", "property": "v"},
    {"func": "min", "property": "v"},
    {"func": "max", "property": "v"},
    {"func": "unique", "property": "k"},
]


@pytest.mark.django_db
def test_fast_path_equals_general_path_with_credits_and_resets(organization):
    rng = random.Random(7)
    customer = create_customer(organization=organization, email="n@example.com", external_id="n")
    created = [
        meters.create_meter(
            organization=organization,
            name=f"m-{spec['func']}",
            filter={
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": "use"}],
            },
            aggregation=spec,
        )
        for spec in AGGREGATIONS
    ]
    base = datetime(2026, 10, 1, 10, 17, tzinfo=UTC)
    events = [
        {
            "name": "use",
            "external_customer_id": "n",
            "timestamp": (base + timedelta(minutes=37 * i)).isoformat(),
            "metadata": {
                "v": Decimal(rng.randint(-300, 900)) / 10,
                "k": rng.choice(["a", "b", 1, True]),
            }
            if i % 5
            else {"v": "not a number", "k": "z"},
        }
        for i in range(300)
    ]
    ingest_events(organization=organization, events=events)
    count_meter, sum_meter = created[0], created[1]
    customer_meters.grant_credits(customer=customer, meter=sum_meter, units=100, reason="test")
    customer_meters.grant_credits(customer=customer, meter=sum_meter, units=-150, reason="test")
    customer_meters.grant_credits(customer=customer, meter=sum_meter, units=50, reason="test")
    customer_meters.reset_meter(
        customer=customer,
        meter=count_meter,
        reason="test",
        timestamp=base + timedelta(days=3, minutes=5),
    )

    rows = CustomerMeter.objects.filter(customer=customer).select_related("meter", "customer")
    fast = {
        cm.meter_id: numbers for cm, numbers in customer_meters.customer_meters_with_numbers(rows)
    }
    assert len(fast) == 6
    for cm in rows:
        general = customer_meters.numbers_for(cm.meter, customer)
        assert fast[cm.meter_id].consumed_units == general.consumed_units, cm.meter.name
        assert fast[cm.meter_id].credited_units == general.credited_units, cm.meter.name
        assert fast[cm.meter_id].balance == general.balance, cm.meter.name
    assert fast[sum_meter.pk].credited_units == 50
    assert fast[count_meter.pk].window_start is not None  # the reset meter took the general path
    assert fast[count_meter.pk].consumed_units < 300


@pytest.mark.django_db
def test_customer_state_query_count_does_not_grow_with_meters(organization, api):
    create_customer(organization=organization, email="q@example.com", external_id="q")
    for spec in AGGREGATIONS:
        meters.create_meter(
            organization=organization,
            name=f"q-{spec['func']}",
            filter={"conjunction": "and", "clauses": []},
            aggregation=spec,
        )
    ingest_events(
        organization=organization,
        events=[{"name": "x", "external_customer_id": "q", "metadata": {"v": 1, "k": "a"}}],
    )
    with CaptureQueriesContext(connection) as queries:
        state = api.get("/v1/customers/external/q/state").json()
    assert [m["consumed_units"] for m in state["active_meters"]] and len(
        state["active_meters"]
    ) == 6
    # 9 for the meters, plus billing's constant 3 (live subscriptions for the state section,
    # those pricing the meters for the billing-period window, and the customer's balances), plus
    # the API rate-limit counter
    assert len(queries.captured_queries) <= 13, [q["sql"][:80] for q in queries.captured_queries]
