"""Property test: on random event streams the Python reference, the PostgreSQL store and the
ClickHouse store give the same numbers — random filters (the typed comparison rule), all six
aggregations over numbers at the range limits, strings and booleans, duplicates (an external id
sent again, in the batch and later), events linked to a customer created after them, buckets
with edges anywhere, and late events: what arrived after a read boundary joins a window's set
exactly as billing reads it."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from customers.models import Organization
from customers.services import create_customer
from metering import aggregation, ingest, queries
from metering.models import Meter, MeterState
from metering.queries import Arrivals, Window
from tests.metering.test_rollup_property import (
    BASE,
    KEYS,
    aggregations,
    cut_points,
    meter_filters,
)

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = Decimal("9" * 60 + "E-20")  # the largest accepted magnitude: 10^40 - 10^-20
EXTREMES = [
    LIMIT,
    LIMIT.copy_negate(),
    Decimal("1e-20"),
    Decimal("-1e-20"),
    Decimal("0.1"),
    Decimal("0.2"),
]
numbers = st.one_of(
    st.integers(-50, 50),
    st.decimals(min_value=-20, max_value=20, places=2, allow_nan=False),
    st.sampled_from(EXTREMES),
    # any magnitude up to the limit, with all 20 places
    st.integers(-(10**60) + 1, 10**60 - 1).map(lambda n: Decimal(f"{n}E-20")),
)
scalars = st.one_of(
    numbers,
    st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude", "a%b", "", "100", "Gpt"]),
    st.booleans(),
)


@st.composite
def event_metadata(draw):
    metadata = draw(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4))
    if draw(st.booleans()):
        metadata["tokens"] = draw(numbers)
    if draw(st.booleans()):
        metadata["_llm"] = {
            "vendor": "openai",
            "model": "gpt-4o",
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": draw(st.integers(0, 2000)),
        }
    return metadata


@st.composite
def stream_events(draw):
    return {
        "name": draw(st.sampled_from(["llm.completion", "api.call", "Api.Call", "x%y"])),
        "customer": draw(st.integers(0, 3)),  # 3 = a customer created after its events
        "offset": draw(st.integers(0, 3 * 24 * 3600 - 1)),
        "micro": draw(st.sampled_from([0, 0, 500_000, 1])),
        "metadata": draw(event_metadata()),
        "key": draw(st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))),
    }


def _body(event, customers, tag):
    body = {
        "name": event["name"],
        "timestamp": (
            BASE + timedelta(seconds=event["offset"], microseconds=event["micro"])
        ).isoformat(),
        "metadata": event["metadata"],
    }
    if event["key"] is not None:
        body["external_id"] = f"{tag}-{event['key']}"
    if event["customer"] == 0:
        body["customer_id"] = str(customers[0].pk)
    else:
        body["external_customer_id"] = f"{tag}-c{event['customer']}"
    return body


def _reference_event(event) -> dict:
    return {
        "name": event["name"],
        "source": "user",
        "timestamp": BASE + timedelta(seconds=event["offset"], microseconds=event["micro"]),
        "metadata": event["metadata"],
    }


def _partial_key(partial: aggregation.Partial, func: str):
    if func == "unique":
        return (partial.event_count, partial.distinct)
    return (
        partial.event_count,
        partial.numeric_count,
        partial.numeric_sum,
        partial.numeric_min,
        partial.numeric_max,
    )


class Fixture:
    """One organization per store for the whole test; each example gets its own customers (a
    tag in their external ids), so examples never see each other's events."""

    def __init__(self, store_settings, chdb_url):
        self.settings = store_settings
        self.chdb_url = chdb_url
        self.orgs = {
            name: Organization.objects.create(name=f"property {name} {uuid.uuid4()}")
            for name in ("postgres", "clickhouse")
        }

    def use(self, name):
        self.settings.EVENT_STORE = name
        self.settings.CLICKHOUSE_URL = self.chdb_url


@pytest.fixture
def stores(settings, chdb_url):
    return Fixture(settings, chdb_url)


@settings(
    max_examples=300,
    # no shrinking: a failure prints its example at once instead of minutes later
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stream=st.lists(stream_events(), max_size=14),
    split=st.integers(0, 14),
    meter_filter=meter_filters,
    meter_aggregation=aggregations,
    buckets=cut_points(),
)
def test_reference_postgres_and_clickhouse_agree(
    stores, stream, split, meter_filter, meter_aggregation, buckets
):
    func = meter_aggregation["func"]
    # the reference: first external id wins, across batches
    seen, kept = set(), []
    for index, event in enumerate(stream):
        if event["key"] is not None:
            if event["key"] in seen:
                continue
            seen.add(event["key"])
        kept.append((index, event))
    # after the boundary: the second batch, and every event of the customer created last (its
    # events become its usage when it is created: linking is their arrival)
    arrived_late = {index for index, e in kept if index >= split or e["customer"] == 3}
    early = (BASE, buckets[0][0]) if buckets[0][0] > BASE else None
    window_ranges = (buckets[0][0], buckets[-1][1])

    def reference(predicate):
        return aggregation.python_partial(
            meter_filter,
            meter_aggregation,
            [_reference_event(e) for i, e in kept if predicate(i, e)],
        )

    def moment(event):
        return BASE + timedelta(seconds=event["offset"], microseconds=event["micro"])

    expected_parts = [
        _partial_key(reference(lambda i, e, lo=lo, hi=hi: lo <= moment(e) < hi), func)
        for lo, hi in buckets
    ]
    expected_total = _partial_key(
        reference(lambda i, e: window_ranges[0] <= moment(e) < window_ranges[1]), func
    )

    def in_set(i, e, customer):
        if e["customer"] != customer:
            return False
        if window_ranges[0] <= moment(e) < window_ranges[1]:
            return True
        joins = early is not None and func not in queries.ADDITIVE and i in arrived_late
        return joins and early[0] <= moment(e) < early[1]

    expected_windows = [
        aggregation.final_value(func, reference(lambda i, e, c=c: in_set(i, e, c)))
        for c in range(4)
    ]

    results = {}
    for name, organization in stores.orgs.items():
        stores.use(name)
        tag = uuid.uuid4().hex[:12]
        customers = [
            create_customer(
                organization=organization, email=f"{tag}{i}@x.io", external_id=f"{tag}-c{i}"
            )
            for i in range(3)
        ]
        first = [_body(e, customers, tag) for e in stream[:split]]
        second = [_body(e, customers, tag) for e in stream[split:]]
        ingest.ingest_events(organization=organization, events=first)
        with queries.consistent_read() as boundary:
            pass
        ingest.ingest_events(organization=organization, events=second)
        customers.append(
            create_customer(
                organization=organization, email=f"{tag}3@x.io", external_id=f"{tag}-c3"
            )
        )
        meter = Meter(
            organization=organization,
            name="property",
            filter=meter_filter,
            aggregation=meter_aggregation,
            # not saved, so no rollups: both stores read raw events (the backfill path)
            state=MeterState.BACKFILLING,
        )
        # the buckets are contiguous: their total is the window's
        parts, total = aggregation.compute(
            meter, buckets=buckets, customer_ids=[c.pk for c in customers], use_rollups=False
        )
        late = Arrivals((early,), boundary) if early and func not in queries.ADDITIVE else None
        windows = [Window(n, meter, c.pk, (window_ranges,), late) for n, c in enumerate(customers)]
        with queries.consistent_read():
            values = queries.window_values(windows)
        results[name] = (
            [_partial_key(p, func) for p in parts],
            _partial_key(total, func),
            [values[n].value for n in range(4)],
        )
    note(repr(results))
    expected = (expected_parts, expected_total, expected_windows)
    assert results["postgres"] == expected
    assert results["clickhouse"] == expected
