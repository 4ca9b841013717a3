"""The event-store contract, run against both stores (conftest `store`): the numbers every read
of the product gives, idempotency, linking and read boundaries; then what only the ClickHouse
store has: deduplicated redelivery, the watermark of undelivered batches, the relay."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from customers.services import create_customer
from metering import aggregation, meters, quantities, queries
from metering.customer_meters import active_customer_meters
from metering.ingest import ingest_events
from metering.models import EventBatch
from metering.queries import Arrivals, Window

pytestmark = pytest.mark.django_db(transaction=True)

T = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
LIMIT = Decimal("9" * 60 + "E-20")


def named(name):
    return {
        "conjunction": "and",
        "clauses": [{"property": "name", "operator": "eq", "value": name}],
    }


@pytest.fixture
def org(store, token_for):
    return token_for(f"Contract {store}")[0]


@pytest.fixture
def six(org):
    """One meter per aggregation over `llm` events' `tokens` (`model` for unique)."""
    made = {}
    for func in ("count", "sum", "avg", "min", "max", "unique"):
        aggregation_ = {"func": func}
        if func != "count":
            aggregation_["property"] = "model" if func == "unique" else "tokens"
        made[func] = meters.create_meter(
            organization=org, name=f"m {func}", filter=named("llm"), aggregation=aggregation_
        )
    return made


def event(customer, minutes, tokens=None, model=None, key=None, name="llm", **extra):
    metadata = dict(extra)
    if tokens is not None:
        metadata["tokens"] = tokens
    if model is not None:
        metadata["model"] = model
    body = {
        "name": name,
        "external_customer_id": customer,
        "timestamp": (T + timedelta(minutes=minutes)).isoformat(),
        "metadata": metadata,
    }
    if key:
        body["external_id"] = key
    return body


def values(customer):
    return {
        cm.meter.aggregation["func"]: numbers.consumed_units
        for cm, numbers in active_customer_meters(customer=customer)
    }


def test_customer_meters_quantities_and_dashboard(org, six):
    ada = create_customer(organization=org, email="ada@x.io", external_id="ada")
    result = ingest_events(
        organization=org,
        events=[
            event("ada", 0, 10, "gpt-4o", key="a"),
            event("ada", 30, Decimal("20.5"), "gpt-4o", key="b"),
            event("ada", 24 * 60, 30, "claude", key="c"),
            event("ada", 24 * 60 + 1, "30", True),  # a string and a boolean: no number
            event("ada", 24 * 60 + 2, 30, 1),
            event("ada", 5, 99, name="other"),
            event("bob", 5, 1000, "x"),
        ],
    )
    assert (result.inserted, result.duplicates) == (7, 0)
    again = ingest_events(organization=org, events=[event("ada", 0, 500, key="a")])
    assert (again.inserted, again.duplicates) == (0, 1)
    assert values(ada) == {
        "count": 5,
        "sum": Decimal("90.5"),
        "avg": Decimal("22.625"),
        "min": 10,
        "max": 30,
        "unique": 4,  # "gpt-4o", "claude", true, 1
    }
    per_day = quantities.quantities(
        six["avg"],
        start=T,
        end=T + timedelta(days=2),
        interval="day",
        zone=ZoneInfo("UTC"),
        customer_ids=[ada.pk],
        customer_aggregation_function=None,
        metadata=None,
    )
    assert [q["quantity"] for q in per_day["quantities"]] == [Decimal("15.25"), 30]
    assert per_day["total"] == Decimal("22.625")
    unique = quantities.quantities(
        six["unique"],
        start=T,
        end=T + timedelta(days=2),
        interval="day",
        zone=ZoneInfo("UTC"),
        customer_ids=None,
        customer_aggregation_function=None,
        metadata={"model": ["gpt-4o"]},
    )
    assert [q["quantity"] for q in unique["quantities"]] == [1, 0]
    bob = create_customer(organization=org, email="bob@x.io", external_id="bob")  # links
    assert values(bob)["sum"] == 1000
    daily = {
        s.meter.name: s.values
        for s in queries.daily_values(
            organization_id=org.pk, since=T, until=T + timedelta(days=1, hours=1)
        )
    }
    assert daily["m sum"] == {date(2025, 1, 6): Decimal("1030.5"), date(2025, 1, 7): 60}
    assert daily["m unique"] == {date(2025, 1, 6): 2, date(2025, 1, 7): 3}
    assert queries.bucket_values(
        six["count"],
        customer_id=ada.pk,
        buckets=[(T, T + timedelta(hours=1)), (T + timedelta(hours=1), T + timedelta(hours=2))],
    ) == [2, 0]


def test_numbers_at_the_range_limits(org, six):
    ada = create_customer(organization=org, email="ada@x.io", external_id="ada")
    tiny = Decimal("1E-20")
    ingest_events(
        organization=org,
        events=[
            event("ada", 0, LIMIT),
            event("ada", 1, LIMIT),
            event("ada", 2, tiny),
            event("ada", 3, LIMIT.copy_negate()),
            event("ada", 4, Decimal("0.1")),
            event("ada", 5, Decimal("0.2")),
        ],
    )
    got = values(ada)
    assert got["sum"] == aggregation.exact_sum([LIMIT, tiny, Decimal("0.3")])
    assert got["max"] == LIMIT and got["min"] == LIMIT.copy_negate()
    assert got["avg"] == aggregation.DECIMAL_CONTEXT.divide(got["sum"], 6)
    with queries.consistent_read():
        window = queries.window_values(
            [Window("w", six["sum"], ada.pk, ((T, T + timedelta(minutes=3)),))]
        )
    assert window["w"].value == aggregation.exact_sum([LIMIT, LIMIT, tiny])


def test_a_close_reads_every_meter_over_each_customers_own_ranges(org, six):
    """Windows of several meters, customers and range sets in one read (ClickHouse answers them
    in one scan): a customer's events count only in its own windows, a window of two ranges
    takes both, overlapping sets of different customers stay apart."""
    ada = create_customer(organization=org, email="ada@x.io", external_id="ada")
    bob = create_customer(organization=org, email="bob@x.io", external_id="bob")
    ingest_events(
        organization=org,
        events=[
            event("ada", 0, 5, "a"),
            event("ada", 30, 7, "b"),
            event("ada", 90, 1, "a"),
            event("ada", 200, 3, "c"),
            event("bob", 10, 100, "x"),
            event("bob", 100, 200, "y"),
        ],
    )
    two = ((T, T + timedelta(minutes=20)), (T + timedelta(minutes=80), T + timedelta(minutes=100)))
    hour = ((T, T + timedelta(minutes=60)),)
    with queries.consistent_read():
        got = queries.window_values(
            [
                Window("ada sum", six["sum"], ada.pk, two),
                Window("ada max", six["max"], ada.pk, hour),
                Window("ada unique", six["unique"], ada.pk, two),
                Window("ada count", six["count"], ada.pk, ((T, T + timedelta(days=1)),)),
                Window(
                    "bob count",
                    six["count"],
                    bob.pk,
                    ((T + timedelta(minutes=60), T + timedelta(minutes=120)),),
                ),
                Window("bob min", six["min"], bob.pk, hour),
                Window("bob avg", six["avg"], bob.pk, two),
                Window(
                    "bob empty",
                    six["max"],
                    bob.pk,
                    ((T + timedelta(days=2), T + timedelta(days=3)),),
                ),
            ]
        )
    assert {key: value.value for key, value in got.items()} == {
        "ada sum": 6,
        "ada max": 7,
        "ada unique": 1,
        "ada count": 4,
        "bob count": 1,
        "bob min": 100,
        "bob avg": 100,
        "bob empty": 0,
    }


def test_late_arrivals_after_a_boundary_and_linking(org, six):
    ada = create_customer(organization=org, email="ada@x.io", external_id="ada")
    ingest_events(organization=org, events=[event("ada", 60, 5, "a"), event("ada", 120, 7, "b")])
    with queries.consistent_read() as first:
        before = queries.window_values(
            [Window("max", six["max"], ada.pk, ((T, T + timedelta(days=1)),))]
        )
    assert before["max"].value == 7
    # late: timestamps inside the closed window, arriving after its boundary
    ingest_events(organization=org, events=[event("ada", 90, 50, "c"), event("ada", 2000, 1, "d")])
    ingest_events(organization=org, events=[event("cy", 30, 40, "e")])  # unknown customer yet
    cy = create_customer(organization=org, email="cy@x.io", external_id="cy")
    period = ((T + timedelta(days=1), T + timedelta(days=2)),)
    late = Arrivals(((T, T + timedelta(days=1)),), first)
    with queries.consistent_read():
        after = queries.window_values(
            [
                Window("max", six["max"], ada.pk, period, late),
                Window("unique", six["unique"], ada.pk, period, late),
                Window("cy", six["max"], cy.pk, period, late),
                Window("count", six["count"], ada.pk, ((T, T + timedelta(days=2)),)),
            ]
        )
    assert (after["max"].value, after["max"].late_events) == (50, 1)
    assert (after["unique"].value, after["unique"].late_events) == (2, 1)  # own "d", late "c"
    assert (after["cy"].value, after["cy"].late_events) == (40, 1)  # linked after `first`
    assert after["count"].value == 4
    seen = queries.window_events(
        Window("e", six["sum"], ada.pk, ((T, T + timedelta(days=2)),)), seen_by=first
    )
    assert [(e.timestamp, e.number) for e in seen] == [
        (T + timedelta(minutes=60), 5),
        (T + timedelta(minutes=120), 7),
    ]


@pytest.mark.parametrize("store", ["clickhouse"], indirect=True)
def test_redelivery_counts_once_and_the_watermark_holds_back_a_batch_in_flight(
    org, six, monkeypatch
):
    from metering.stores import clickhouse

    ada = create_customer(organization=org, email="ada@x.io", external_id="ada")
    ingest_events(organization=org, events=[event("ada", 0, 1, key="one")])
    delivered = EventBatch.objects.get(organization=org)
    assert delivered.delivered_at is not None and delivered.rows is None
    # the same batch inserted again (a relay racing the request): the token makes it a no-op
    rows = (
        clickhouse.client()
        .query(f"SELECT * FROM {clickhouse.layout().events} WHERE batch_id = {delivered.pk}")
        .result_rows
    )
    clickhouse._insert([list(r) for r in rows], delivered.pk)
    assert values(ada)["count"] == 1

    def unreachable(rows, batch_id):
        raise ConnectionError("ClickHouse unreachable")

    monkeypatch.setattr(clickhouse, "_insert", unreachable)
    result = ingest_events(organization=org, events=[event("ada", 10, 2, key="two")])
    assert (result.inserted, result.duplicates) == (1, 0)  # accepted: the relay owes it
    pending = EventBatch.objects.get(organization=org, delivered_at__isnull=True)
    assert pending.attempts == 1 and "unreachable" in pending.last_error
    assert clickhouse.watermark() == pending.created_at
    with queries.consistent_read() as boundary:
        closed = queries.window_values(
            [Window("sum", six["sum"], ada.pk, ((T, T + timedelta(days=1)),))]
        )
    assert closed["sum"].value == 1  # the batch in flight is not in this close ...
    assert not clickhouse.visible(pending.txid, boundary.token)
    monkeypatch.undo()
    assert clickhouse.relay(min_age=timedelta(0)) == 1
    assert clickhouse.watermark() is None
    late = Arrivals(((T, T + timedelta(days=1)),), boundary)
    with queries.consistent_read():
        after = queries.window_values(
            [
                Window(
                    "max",
                    six["max"],
                    ada.pk,
                    ((T + timedelta(days=1), T + timedelta(days=2)),),
                    late,
                ),
                Window("sum", six["sum"], ada.pk, ((T, T + timedelta(days=1)),)),
            ]
        )
    assert (after["max"].value, after["max"].late_events) == (2, 1)  # ... but in the next one
    assert after["sum"].value == 3
    again = ingest_events(organization=org, events=[event("ada", 10, 2, key="two")])
    assert (again.inserted, again.duplicates) == (0, 1)
