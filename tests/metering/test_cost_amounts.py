"""`_cost.amount` is a number (Polar's cost events): a `sum` meter over it adds costs up exactly,
whether the client sent a number or a decimal string, and polar-sdk reads the amount back as the
decimal string its types expect."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from metering import backfill
from metering.models import Event

pytestmark = pytest.mark.django_db(transaction=True)

BASE = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
# strings and numbers, fractional cents, a negative correction, 20 decimal places
AMOUNTS = ["12.5", 100, "0.00000000000000000001", -2, "13.49999999999999999999", 0.25]
EXPECTED_SUM = Decimal("124.25")


def cost_event(index, amount, currency="usd"):
    return {
        "name": "llm.completion",
        "external_customer_id": "c1",
        "external_id": f"cost-{index}",
        "timestamp": (BASE + timedelta(minutes=index)).isoformat(),
        "metadata": {"_cost": {"amount": amount, "currency": currency}},
    }


def test_a_sum_meter_over_cost_amount_adds_the_costs_sent(polar):
    assert sum(Decimal(str(a)) for a in AMOUNTS) == EXPECTED_SUM
    polar.customers.create(email="c1@example.com", external_id="c1")
    events = [cost_event(i, a) for i, a in enumerate(AMOUNTS)]
    events.append(cost_event(99, "5", currency="EUR"))  # summed too: the meter doesn't filter
    polar.events.ingest(events=events)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT jsonb_typeof(metadata #> '{_cost,amount}'), count(*) FROM metering_event "
            "GROUP BY 1"
        )
        assert cursor.fetchall() == [("number", len(AMOUNTS) + 1)]

    meter = polar.meters.create(
        name="LLM cost",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "_cost.currency", "operator": "eq", "value": "usd"}],
        },
        aggregation={"func": "sum", "property": "_cost.amount"},
    )
    total = polar.meters.quantities(
        meter.id,
        start_timestamp=BASE - timedelta(hours=1),
        end_timestamp=BASE + timedelta(days=1),
        interval="day",
    ).total
    assert Decimal(str(total)) == EXPECTED_SUM  # the raw path (the meter is backfilling)
    backfill.backfill(meter.id)
    state = polar.customers.get_state_external("c1")
    (active,) = [m for m in state.active_meters if m.meter_id == meter.id]
    assert Decimal(str(active.consumed_units)) == EXPECTED_SUM  # the rollups

    listed = polar.events.list(external_customer_id="c1", limit=100, sorting=["timestamp"])
    amounts = [event.metadata["_cost"].amount for event in listed.items]
    assert amounts == [
        "12.5",
        "100",
        "0.00000000000000000001",
        "-2",
        "13.49999999999999999999",
        "0.25",
        "5",
    ]
    assert [event.metadata["_cost"].currency for event in listed.items][-2:] == ["usd", "eur"]
    one = polar.events.get(listed.items[2].id)
    assert one.metadata["_cost"].amount == "0.00000000000000000001"


def test_cost_amounts_out_of_range_are_refused_naming_the_field(api):
    bad = [
        "1e40",
        "0.000000000000000000001",  # 21 places
        "NaN",
        "abc",
        True,
        None,
    ]
    for amount in bad:
        response = api.post(
            "/v1/events/ingest",
            {"events": [cost_event(0, amount)]},
            format="json",
        )
        assert response.status_code == 422, amount
        assert response.json()["detail"][0]["loc"] == [
            "body",
            "events",
            0,
            "metadata",
            "_cost",
            "amount",
        ]
    assert not Event.objects.exists()
