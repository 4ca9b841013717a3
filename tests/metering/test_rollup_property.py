"""Property test: on random event streams, random filters and random aggregations, the rollup
path, the raw-event path and the pure-Python evaluator agree — with out-of-order timestamps,
events linked to a customer later, a backfilled meter, and bucket edges not aligned to hours."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from customers.models import Organization
from customers.services import create_customer
from metering import aggregation, backfill, ingest, meters
from metering.models import Meter, MeterState

BASE = datetime(2024, 3, 9, 0, 0, tzinfo=UTC)
KEYS = ["tokens", "model", "flag", "a.b", "n"]
PROPERTIES = [*KEYS, "name", "timestamp", "metadata.tokens", "_llm.total_tokens", "source"]

numbers = st.one_of(
    st.integers(-50, 50),
    st.decimals(min_value=-20, max_value=20, places=2, allow_nan=False),
)
scalars = st.one_of(
    st.integers(-50, 50),
    st.decimals(min_value=-20, max_value=20, places=2, allow_nan=False),
    st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude", "a%b", "a_b", "", "100", "Gpt"]),
    st.booleans(),
)


@st.composite
def event_metadata(draw):
    metadata = draw(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4))
    if draw(st.booleans()):
        metadata["tokens"] = draw(numbers)
    if draw(st.booleans()):
        total = draw(st.integers(0, 2000))
        metadata["_llm"] = {
            "vendor": "openai",
            "model": "gpt-4o",
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": total,
        }
    return metadata


@st.composite
def events(draw):
    return {
        "name": draw(st.sampled_from(["llm.completion", "api.call", "Api.Call", "x%y"])),
        "customer": draw(st.integers(0, 3)),  # 3 = a customer created after its events
        "offset": draw(st.integers(0, 3 * 24 * 3600 - 1)),  # seconds after BASE, any order
        "micro": draw(st.sampled_from([0, 0, 500_000])),
        "metadata": draw(event_metadata()),
    }


@st.composite
def clauses(draw):
    prop = draw(st.sampled_from(PROPERTIES))
    operator = draw(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "like", "not_like"]))
    if prop == "timestamp":
        value = draw(
            st.one_of(
                st.integers(0, 3 * 24 * 3600).map(lambda s: int(BASE.timestamp()) + s), scalars
            )
        )
    elif prop == "name":
        value = draw(
            st.one_of(st.sampled_from(["llm.completion", "api", "Api", "%", "x%y"]), scalars)
        )
    else:
        value = draw(scalars)
    if isinstance(value, Decimal):
        value = float(value) if value != value.to_integral_value() else int(value)
    return {"property": prop, "operator": operator, "value": value}


def filters(depth=0):
    leaf = clauses()
    children = leaf if depth >= 2 else st.one_of(leaf, st.deferred(lambda: filters(depth + 1)))
    return st.builds(
        lambda conjunction, items: {"conjunction": conjunction, "clauses": items},
        st.sampled_from(["and", "or"]),
        st.lists(children, max_size=3),
    )


NUMERIC_PROPERTIES = ["tokens", "n", "_llm.total_tokens", "metadata.tokens", "timestamp"]
aggregations = st.sampled_from(["count", "sum", "avg", "min", "max", "unique"]).flatmap(
    lambda func: (
        st.just({"func": "count"})
        if func == "count"
        else st.builds(
            lambda prop: {"func": func, "property": prop},
            st.one_of(st.sampled_from(NUMERIC_PROPERTIES), st.sampled_from(PROPERTIES)),
        )
    )
)
meter_filters = st.one_of(st.just({"conjunction": "and", "clauses": []}), filters())


@st.composite
def cut_points(draw):
    """Contiguous buckets with edges anywhere (seconds, half hours, whole hours)."""
    count = draw(st.integers(1, 4))
    edges = sorted(
        set(
            draw(
                st.lists(
                    st.one_of(
                        st.integers(-3600, 4 * 24 * 3600),
                        st.integers(-1, 96).map(lambda h: h * 3600),
                        st.integers(-1, 96).map(lambda h: h * 3600 + 1800),
                    ),
                    min_size=count + 1,
                    max_size=count + 1,
                )
            )
        )
    )
    if len(edges) < 2:
        edges = [edges[0], edges[0] + 3600]
    return [
        (BASE + timedelta(seconds=a), BASE + timedelta(seconds=b))
        for a, b in zip(edges, edges[1:], strict=False)
    ]


def same(left: aggregation.Partial, right: aggregation.Partial, func: str) -> bool:
    if func == "unique":
        return (left.event_count, left.distinct) == (right.event_count, right.distinct)
    return (
        left.event_count,
        left.numeric_count,
        left.numeric_sum,
        left.numeric_min,
        left.numeric_max,
    ) == (
        right.event_count,
        right.numeric_count,
        right.numeric_sum,
        right.numeric_min,
        right.numeric_max,
    )


@pytest.mark.django_db
@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stream=st.lists(events(), max_size=25),
    meter_filter=meter_filters,
    meter_aggregation=aggregations,
    buckets=cut_points(),
    split=st.integers(0, 25),
    backfill_chunk=st.integers(1, 30),
    customer_filter=st.sampled_from([None, [0], [1, 3]]),
)
def test_rollups_equal_raw_events_and_python(
    stream, meter_filter, meter_aggregation, buckets, split, backfill_chunk, customer_filter
):
    with transaction.atomic():
        organization = Organization.objects.create(name=f"prop-{uuid.uuid4()}")
        customers = [
            create_customer(organization=organization, email=f"c{i}@x.io", external_id=f"c{i}")
            for i in range(3)
        ]

        def send(batch):
            payload = []
            for event in batch:
                body = {
                    "name": event["name"],
                    "timestamp": (
                        BASE + timedelta(seconds=event["offset"], microseconds=event["micro"])
                    ).isoformat(),
                    "metadata": event["metadata"],
                }
                if event["customer"] == 0:
                    body["customer_id"] = str(customers[0].pk)
                else:
                    body["external_customer_id"] = f"c{event['customer']}"
                payload.append(body)
            ingest.ingest_events(organization=organization, events=payload)

        # Events stored before the meter exists are backfilled; later ones go through ingest.
        send(stream[:split])
        meter = meters.create_meter(
            organization=organization,
            name="prop meter",
            filter=meter_filter,
            aggregation=meter_aggregation,
        )
        backfill.backfill(meter.pk, chunk_events=backfill_chunk)
        meter.refresh_from_db()
        assert meter.state == MeterState.READY
        send(stream[split:])
        customers.append(
            create_customer(organization=organization, email="late@x.io", external_id="c3")
        )
        meter = Meter.objects.get(pk=meter.pk)

        ids = None
        if customer_filter is not None:
            ids = [customers[i].pk for i in customer_filter]
        func = meter_aggregation["func"]
        rolled, rolled_total = aggregation.compute(meter, buckets=buckets, customer_ids=ids)
        raw, raw_total = aggregation.compute(
            meter, buckets=buckets, customer_ids=ids, use_rollups=False
        )
        # the Python reference
        stored = []
        for event in stream:
            stored.append(
                {
                    "name": event["name"],
                    "source": "user",
                    "timestamp": BASE
                    + timedelta(seconds=event["offset"], microseconds=event["micro"]),
                    "metadata": event["metadata"],
                    "customer": event["customer"] if event["customer"] != 2 else 2,
                }
            )
        wanted = set(customer_filter) if customer_filter is not None else {0, 1, 2, 3}
        lo, hi = buckets[0][0], buckets[-1][1]
        for index, (start, end) in enumerate(buckets):
            selected = [
                e for e in stored if start <= e["timestamp"] < end and e["customer"] in wanted
            ]
            expected = aggregation.python_partial(meter_filter, meter_aggregation, selected)
            assert same(rolled[index], raw[index], func), (index, rolled[index], raw[index])
            assert same(raw[index], expected, func), (index, raw[index], expected)
            assert aggregation.final_value(func, rolled[index]) == aggregation.final_value(
                func, expected
            )
        everything = [e for e in stored if lo <= e["timestamp"] < hi and e["customer"] in wanted]
        expected_total = aggregation.python_partial(meter_filter, meter_aggregation, everything)
        note_event(f"{func}: total events matched {'>0' if raw_total.event_count else '0'}")
        assert same(rolled_total, raw_total, func)
        assert same(raw_total, expected_total, func)

        # per customer (customer_aggregation_function) agrees too
        per_rolled, per_rolled_total = aggregation.compute(
            meter, buckets=buckets, customer_ids=ids, per_customer=True
        )
        per_raw, per_raw_total = aggregation.compute(
            meter, buckets=buckets, customer_ids=ids, use_rollups=False, per_customer=True
        )
        assert set(per_rolled_total) == set(per_raw_total)
        for customer_id, partial in per_rolled_total.items():
            assert same(partial, per_raw_total[customer_id], func)
        for left, right in zip(per_rolled, per_raw, strict=True):
            assert set(left) == set(right)
            for customer_id, partial in left.items():
                assert same(partial, right[customer_id], func)
        transaction.set_rollback(True)
