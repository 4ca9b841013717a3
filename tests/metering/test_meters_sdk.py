"""Every example of docs/meters.md (the spec's meters.md), through the real polar-sdk client
against a live server."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from customers.models import Customer
from metering import backfill, customer_meters
from metering.models import Meter

pytestmark = pytest.mark.django_db(transaction=True)

BASE = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)  # a Monday


def ts(hours: float = 0) -> str:
    return (BASE + timedelta(hours=hours)).isoformat()


def everything():
    return {"conjunction": "and", "clauses": []}


def named(name: str):
    return {
        "conjunction": "and",
        "clauses": [{"property": "name", "operator": "eq", "value": name}],
    }


def quantities_total(polar, meter_id, **kwargs):
    params = {
        "start_timestamp": ts(-1),
        "end_timestamp": ts(48),
        "interval": "day",
    }
    params.update(kwargs)
    return polar.meters.quantities(meter_id, **params)


@pytest.mark.parametrize(
    ("func", "expected"),
    [("count", 4), ("sum", 90), ("avg", 22.5), ("min", 10), ("max", 30), ("unique", 3)],
)
def test_polar_docs_example(polar, func, expected):
    polar.events.ingest(
        events=[
            {
                "name": "llm",
                "external_customer_id": "u1",
                "timestamp": ts(i),
                "metadata": {"total_tokens": value},
            }
            for i, value in enumerate([10, 20, 30, 30])
        ]
    )
    aggregation = (
        {"func": "count"} if func == "count" else {"func": func, "property": "total_tokens"}
    )
    meter = polar.meters.create(name=f"tokens {func}", filter=named("llm"), aggregation=aggregation)
    assert meter.aggregation.func == func
    polar.customers.create(email="u1@example.com", external_id="u1")  # links the events
    backfill.backfill(meter.id)  # the Celery task body, run inline
    result = quantities_total(polar, meter.id)
    assert result.total == expected
    state = polar.customers.get_state_external("u1")
    (active,) = [m for m in state.active_meters if m.meter_id == meter.id]
    assert active.consumed_units == expected
    listed = polar.customer_meters.list(meter_id=meter.id)
    assert [m.consumed_units for m in listed.items] == [expected]
    assert listed.items[0].meter.id == meter.id


# The typed-comparison table: (event metadata value, clause operator, clause value, matches?)
TYPED = [
    ("abc", "eq", "abc", True),
    ("abc", "ne", "abd", True),
    ("abc", "lt", "abd", True),
    ("B", "lt", "a", True),  # code-point order: uppercase first
    ("Hello world", "like", "world", True),
    ("Hello world", "like", "World", False),  # case-sensitive
    ("a%c", "like", "%", True),  # % is literal
    ("abc", "like", "a%", False),
    ("abc", "like", "a_c", False),  # _ is literal
    ("abc", "not_like", "x", True),
    (1, "eq", 1.0, True),  # numeric 1 == 1.0
    (1.5, "gt", 1, True),
    (10, "lte", 9, False),
    (100, "like", "10", False),  # numbers never match like
    (True, "eq", True, True),
    (True, "ne", False, True),
    (True, "gt", False, False),  # booleans have no order
    ("100", "eq", 100, False),  # other pairings are false
    (100, "eq", "100", False),
    (True, "eq", 1, False),
    (1, "eq", True, False),
    (None, "eq", "x", False),  # missing
    (None, "ne", "x", False),  # missing: false also for ne
    (None, "not_like", "x", False),  # and for not_like
]


def test_typed_comparison_table(polar):
    events = []
    for index, (value, _op, _expected, _match) in enumerate(TYPED):
        metadata = {"case": index}
        if value is not None:
            metadata["v"] = value
        events.append(
            {
                "name": "typed",
                "external_customer_id": "t1",
                "timestamp": ts(0),
                "metadata": metadata,
            }
        )
    polar.customers.create(email="t1@example.com", external_id="t1")
    polar.events.ingest(events=events)
    for index, (_value, operator, expected, match) in enumerate(TYPED):
        meter = polar.meters.create(
            name=f"typed {index}",
            filter={
                "conjunction": "and",
                "clauses": [
                    {"property": "case", "operator": "eq", "value": index},
                    {"property": "v", "operator": operator, "value": expected},
                ],
            },
            aggregation={"func": "count"},
        )
        backfill.backfill(meter.id)
        total = quantities_total(polar, meter.id).total
        assert total == (1 if match else 0), (index, TYPED[index])


def test_avg_and_unique_totals_across_buckets(polar):
    polar.customers.create(email="b1@example.com", external_id="b1")
    day2 = 24
    polar.events.ingest(
        events=[
            *[
                {
                    "name": "avg",
                    "external_customer_id": "b1",
                    "timestamp": ts(h),
                    "metadata": {"v": 10},
                }
                for h in (0, 1, 2)
            ],
            {
                "name": "avg",
                "external_customer_id": "b1",
                "timestamp": ts(day2),
                "metadata": {"v": 50},
            },
            *[
                {
                    "name": "uniq",
                    "external_customer_id": "b1",
                    "timestamp": ts(0),
                    "metadata": {"u": u},
                }
                for u in "abc"
            ],
            *[
                {
                    "name": "uniq",
                    "external_customer_id": "b1",
                    "timestamp": ts(day2),
                    "metadata": {"u": u},
                }
                for u in "bcd"
            ],
        ]
    )
    avg = polar.meters.create(
        name="avg meter", filter=named("avg"), aggregation={"func": "avg", "property": "v"}
    )
    unique = polar.meters.create(
        name="unique meter", filter=named("uniq"), aggregation={"func": "unique", "property": "u"}
    )
    backfill.backfill(avg.id)
    backfill.backfill(unique.id)
    start, end = (
        BASE.replace(hour=0).isoformat(),
        (BASE.replace(hour=0) + timedelta(days=2)).isoformat(),
    )
    result = polar.meters.quantities(
        avg.id, start_timestamp=start, end_timestamp=end, interval="day"
    )
    assert [q.quantity for q in result.quantities] == [10, 50]
    assert result.total == 20
    result = polar.meters.quantities(
        unique.id, start_timestamp=start, end_timestamp=end, interval="day"
    )
    assert [q.quantity for q in result.quantities] == [3, 3]
    assert result.total == 4


@pytest.mark.parametrize(
    ("function", "expected"),
    [("count", 2), ("sum", 30), ("max", 20), ("min", 10), ("avg", 15), ("unique", 2)],
)
def test_customer_aggregation_function(polar, function, expected):
    polar.customers.create(email="c1@example.com", external_id="C1")
    polar.customers.create(email="c2@example.com", external_id="C2")
    meter = polar.meters.create(
        name="max meter", filter=named("usage"), aggregation={"func": "max", "property": "v"}
    )
    polar.events.ingest(
        events=[
            {
                "name": "usage",
                "external_customer_id": customer,
                "timestamp": ts(i),
                "metadata": {"v": v},
            }
            for customer, values in (("C1", [20, 10]), ("C2", [10, 0]))
            for i, v in enumerate(values)
        ]
    )
    result = quantities_total(polar, meter.id, customer_aggregation_function=function)
    assert result.total == expected


def test_credit_clamping(polar, live_org_token):
    organization = live_org_token[0]
    polar.customers.create(email="k1@example.com", external_id="k1")
    meter = polar.meters.create(
        name="credit meter", filter=named("call"), aggregation={"func": "count"}
    )
    customer = Customer.objects.get(organization=organization, external_id="k1")
    model = Meter.objects.get(pk=meter.id)
    for hours, units in ((-3, 100), (-2, -150), (-1, 50)):
        customer_meters.grant_credits(
            customer=customer,
            meter=model,
            units=units,
            reason="test",
            timestamp=datetime.now(UTC) + timedelta(hours=hours),
        )
    polar.events.ingest(events=[{"name": "call", "external_customer_id": "k1"} for _ in range(7)])
    (item,) = polar.customer_meters.list(external_customer_id="k1").items
    assert item.credited_units == 50
    assert item.consumed_units == 7
    assert item.balance == 43
    state = polar.customers.get_state_external("k1")
    assert [(m.credited_units, m.consumed_units, m.balance) for m in state.active_meters] == [
        (50, 7, 43)
    ]
    # a reset starts a new window: usage and credits before it no longer count
    customer_meters.reset_meter(customer=customer, meter=model, reason="cycle")
    customer_meters.grant_credits(customer=customer, meter=model, units=10, reason="new period")
    polar.events.ingest(events=[{"name": "call", "external_customer_id": "k1"}])
    got = polar.customer_meters.get(item.id)
    assert (got.credited_units, got.consumed_units, got.balance) == (10, 1, 9)
    # archived meters leave customer state
    polar.meters.update(meter.id, is_archived=True)
    assert polar.customers.get_state_external("k1").active_meters == []


def test_meter_crud_shapes(polar):
    meter = polar.meters.create(
        name="api calls",
        filter={
            "conjunction": "and",
            "clauses": [
                {"property": "name", "operator": "eq", "value": "llm.completion"},
                {
                    "conjunction": "or",
                    "clauses": [
                        {"property": "model", "operator": "eq", "value": "gpt-4o"},
                        {"property": "_llm.total_tokens", "operator": "gte", "value": 1000},
                    ],
                },
            ],
        },
        aggregation={"func": "sum", "property": "_llm.total_tokens"},
        unit="token",
        metadata={"team": "ml"},
    )
    got = polar.meters.get(meter.id)
    assert got.name == "api calls" and got.unit == "token" and got.metadata == {"team": "ml"}
    updated = polar.meters.update(meter.id, name="renamed", unit="custom", custom_label="call")
    assert (updated.name, updated.custom_label) == ("renamed", "call")
    listed = polar.meters.list(query="renam")
    assert [m.id for m in listed.items] == [meter.id]
    assert polar.meters.list(is_archived=True).items == []


def test_other_organization_gets_404(polar, live_url, token_for):
    from polar.v2026_10 import Polar
    from polar.v2026_10.errors import ResourceNotFound

    polar.customers.create(email="i1@example.com", external_id="i1")
    meter = polar.meters.create(name="isolated", filter=everything(), aggregation={"func": "count"})
    polar.events.ingest(events=[{"name": "x", "external_customer_id": "i1"}])
    (customer_meter,) = polar.customer_meters.list().items
    _, other_token = token_for(f"Other {uuid.uuid4()}")
    other = Polar(other_token, base_url=live_url)
    with pytest.raises(ResourceNotFound):
        other.meters.get(meter.id)
    with pytest.raises(ResourceNotFound):
        other.meters.update(meter.id, name="stolen")
    with pytest.raises(ResourceNotFound):
        other.meters.quantities(
            meter.id, start_timestamp=ts(0), end_timestamp=ts(1), interval="hour"
        )
    with pytest.raises(ResourceNotFound):
        other.customer_meters.get(customer_meter.id)
    assert other.meters.list().items == []
    assert other.customer_meters.list().items == []
    assert other.customer_meters.list(meter_id=meter.id).items == []
