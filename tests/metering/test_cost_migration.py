"""Migration metering 0009: events stored while `_cost.amount` was a string get the number, in
batches (each its own transaction), touching only those rows; the meters reading `_cost` are
rebuilt, and then sum the costs the rollups used to miss."""

import importlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from customers.services import create_customer
from metering import backfill, meters, queries
from metering.ingest import ingest_events
from metering.models import MeterState

pytestmark = pytest.mark.django_db(transaction=True)

migration = importlib.import_module("metering.migrations.0009_cost_amount_numbers")
BASE = datetime(2025, 5, 5, 9, 0, tzinfo=UTC)
AMOUNTS = ["12.5", "100", "0.00000000000000000001"]


def xmins() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT external_id, xmin::text FROM metering_event")
        return dict(cursor.fetchall())


def test_string_amounts_become_numbers_and_cost_meters_are_rebuilt(organization, api):
    customer = create_customer(organization=organization, email="c@example.com", external_id="c")
    meter = meters.create_meter(
        organization=organization,
        name="LLM cost",
        filter={"conjunction": "and", "clauses": []},
        aggregation={"func": "sum", "property": "_cost.amount"},
    )
    other = meters.create_meter(
        organization=organization,
        name="Calls",
        filter={"conjunction": "and", "clauses": []},
        aggregation={"func": "count"},
    )
    events = [
        {
            "name": "llm",
            "external_customer_id": "c",
            "external_id": f"cost-{i}",
            "timestamp": (BASE + timedelta(minutes=i)).isoformat(),
            "metadata": {"_cost": {"amount": amount, "currency": "usd"}},
        }
        for i, amount in enumerate(AMOUNTS)
    ]
    events.append({**events[0], "external_id": "plain", "metadata": {"tokens": 3}})
    ingest_events(organization=organization, events=events)
    # as stored before the fix: the amount's decimal string, and rollups that never saw a number
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE metering_event SET metadata = jsonb_set(metadata, '{_cost,amount}', "
            "to_jsonb(metadata #>> '{_cost,amount}')) WHERE metadata ? '_cost'"
        )
    meters.start_rebuild(meter=meter, enqueue=False)
    backfill.backfill(meter.pk)

    def cost() -> Decimal:
        window = queries.Window(
            key="w", meter=meter, customer_id=customer.pk, ranges=((BASE, BASE + timedelta(1)),)
        )
        return queries.window_values([window])["w"].value

    assert cost() == 0  # the bug: strings take no part in a sum
    before = xmins()

    converted, organizations = migration.convert_cost_amounts(batch=2)
    assert (converted, organizations) == (3, {organization.pk})
    after = xmins()
    assert after["plain"] == before["plain"]  # rows without a string amount are not rewritten
    assert len({after[f"cost-{i}"] for i in range(3)}) == 2  # two batches, two transactions
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (metadata #> '{_cost,amount}')::text FROM metering_event "
            "WHERE metadata ? '_cost' ORDER BY external_id"
        )
        assert [row[0] for row in cursor.fetchall()] == AMOUNTS
    assert migration.convert_cost_amounts(batch=2) == (0, set())  # nothing left

    assert migration.rebuild_cost_meters(organizations) == [meter.pk]  # not the count meter
    meter.refresh_from_db()
    other.refresh_from_db()
    assert (meter.state, other.state) == (MeterState.BACKFILLING, MeterState.READY)
    assert cost() == Decimal("112.50000000000000000001")  # raw events while backfilling
    backfill.backfill(meter.pk)
    meter.refresh_from_db()
    assert meter.state == MeterState.READY
    assert cost() == Decimal("112.50000000000000000001")  # the rebuilt rollups

    listed = api.get("/v1/events/", {"external_customer_id": "c"}).json()["items"]
    amounts = [e["metadata"]["_cost"]["amount"] for e in listed if "_cost" in e["metadata"]]
    assert sorted(amounts) == sorted(AMOUNTS)  # the API's decimal strings, exactly as sent
