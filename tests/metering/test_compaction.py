"""Rollup compaction runs while events arrive and numbers are read: at every moment the rollup
path (compact tiers + pending deltas) equals the raw-event path, and concurrent ingest streams
into the same customers and meters lose nothing and never fail (docs/meters.md, "Rollup
storage")."""

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.db import connection, transaction

from customers.services import create_customer
from metering import aggregation, compaction, customer_meters, ingest, meters, rollups
from metering.models import CustomerMeter, Event, Meter
from tests.support import AppServer

METERS = [
    ("count", {"func": "count"}),
    ("sum", {"func": "sum", "property": "tokens"}),
    ("avg", {"func": "avg", "property": "tokens"}),
    ("min", {"func": "min", "property": "tokens"}),
    ("max", {"func": "max", "property": "tokens"}),
    ("unique", {"func": "unique", "property": "model"}),
]
WORK = {"conjunction": "and", "clauses": [{"property": "name", "operator": "eq", "value": "work"}]}
# Timestamps spread over the last 3 days, so reads combine the daily tier (whole days), the
# hourly tier (edges) and the deltas; 'now' is taken once so that every read asks the same.
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=3)


def _make_meters(organization) -> list[Meter]:
    for label, spec in METERS:
        meters.create_meter(
            organization=organization, name=f"meter {label}", filter=WORK, aggregation=spec
        )
    return list(Meter.objects.filter(organization=organization).order_by("name"))


def _event(rng: random.Random, customer, external_id: str) -> dict:
    moment = START + timedelta(seconds=rng.randrange(int((NOW - START).total_seconds())))
    return {
        "name": rng.choice(["work", "work", "work", "other"]),
        "external_customer_id": customer.external_id,
        "external_id": external_id,
        "timestamp": moment.isoformat(),
        "metadata": {"tokens": rng.randint(-50, 5000), "model": rng.choice("abcdefg")},
    }


def _pending_deltas(meter_ids) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {rollups.DELTA_TABLE} WHERE meter_id = ANY(%s::uuid[])",
            [[str(m) for m in meter_ids]],
        )
        return cursor.fetchone()[0]


def _compacted(meter_ids) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {rollups.DAY_TABLE} WHERE meter_id = ANY(%s::uuid[])",
            [[str(m) for m in meter_ids]],
        )
        return cursor.fetchone()[0]


def _differences(meter_list, customers) -> list:
    """Every read path against the raw path, in one snapshot (REPEATABLE READ): the rollups
    must equal the raw events exactly, whatever ingestion and compaction commit meanwhile."""
    buckets = [
        (START + timedelta(minutes=7), START + timedelta(days=1)),  # edges + hours
        (START + timedelta(days=1), NOW - timedelta(hours=5)),  # whole days inside
        (NOW - timedelta(hours=5), NOW + timedelta(minutes=10)),
    ]
    everything = [(datetime(2000, 1, 1, tzinfo=UTC), aggregation.FAR_FUTURE)]
    found = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pending = _pending_deltas([m.pk for m in meter_list])
        compacted = _compacted([m.pk for m in meter_list])
        for meter in meter_list:
            func = meter.aggregation["func"]
            for ids in ([c.pk for c in customers], [customers[0].pk]):
                for window in (buckets, everything):
                    rolled, rolled_total = aggregation.compute(
                        meter, buckets=window, customer_ids=ids
                    )
                    raw, raw_total = aggregation.compute(
                        meter, buckets=window, customer_ids=ids, use_rollups=False
                    )
                    for got, want in zip([*rolled, rolled_total], [*raw, raw_total], strict=True):
                        if aggregation.final_value(func, got) != aggregation.final_value(
                            func, want
                        ) or (got.event_count, got.distinct) != (want.event_count, want.distinct):
                            found.append((meter.name, len(ids), got, want))
        # the customer state's whole-history read (daily tier + deltas)
        pairs = list(
            CustomerMeter.objects.filter(meter__in=meter_list).select_related("meter", "customer")
        )
        partials = customer_meters._all_time_partials(pairs)
        for pair in pairs:
            func = pair.meter.aggregation["func"]
            _, raw = aggregation.compute(
                pair.meter, buckets=everything, customer_ids=[pair.customer_id], use_rollups=False
            )
            got = aggregation.final_value(func, partials.get((pair.customer_id, pair.meter_id)))
            if got != aggregation.final_value(func, raw):
                found.append(("state", pair.meter.name, got, aggregation.final_value(func, raw)))
    return found, pending, compacted


@pytest.mark.django_db(transaction=True)
def test_compaction_during_ingest_and_reads_never_differs_from_raw_events(token_for):
    organization, _ = token_for("Compaction")
    customers = [
        create_customer(organization=organization, email=f"c{i}@example.com", external_id=f"c{i}")
        for i in range(4)
    ]
    meter_list = _make_meters(organization)
    stop = threading.Event()
    errors: list = []
    moved: list[int] = []

    def ingesting():
        rng = random.Random(1)
        try:
            for batch in range(40):
                events = [_event(rng, rng.choice(customers), f"b{batch}-{i}") for i in range(60)]
                ingest.ingest_events(organization=organization, events=events)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            stop.set()
            connection.close()

    def compacting():
        try:
            while not stop.is_set():
                moved.append(compaction.compact_rollups())
                time.sleep(0.02)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ingesting), threading.Thread(target=compacting)]
    for thread in threads:
        thread.start()
    reads, mixed = 0, 0
    differences = []
    try:
        while not stop.is_set():
            found, pending, compacted = _differences(meter_list, customers)
            differences += found
            reads += 1
            mixed += bool(pending and compacted)
    finally:
        for thread in threads:
            thread.join()
    assert errors == []
    assert differences == []
    # the reads really saw compaction at work: pending deltas next to compact rows
    assert sum(moved) > 0
    assert reads >= 3 and mixed >= 1
    # and once everything is compacted, still equal; nothing is left pending
    compaction.compact_rollups()
    assert _pending_deltas([m.pk for m in meter_list]) == 0
    found, _, _ = _differences(meter_list, customers)
    assert found == []
    assert Event.objects.filter(organization=organization).count() == 40 * 60


@pytest.fixture
def gunicorn(transactional_db):
    server = AppServer(kind="gunicorn", workers=3).start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_four_streams_into_the_same_customers_while_compaction_runs(gunicorn, token_for):
    organization, secret = token_for("Streams")
    customers = [
        create_customer(organization=organization, email=f"s{i}@example.com", external_id=f"s{i}")
        for i in range(8)
    ]
    meter_list = _make_meters(organization)
    streams, batches, size = 4, 12, 200
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(streams + 1)
    done = threading.Event()
    moved: list[int] = []

    def stream(seed: int):
        rng = random.Random(seed)
        with httpx.Client(
            base_url=gunicorn.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
        ) as http:
            barrier.wait()
            for batch in range(batches):
                events = [
                    _event(rng, customers[i % len(customers)], f"s{seed}-{batch}-{i}")
                    for i in range(size)
                ]
                response = http.post("/v1/events/ingest", json={"events": events})
                with lock:
                    statuses.append(response.status_code)

    def compacting():
        barrier.wait()
        while not done.is_set():
            moved.append(compaction.compact_rollups())
            time.sleep(0.05)
        connection.close()

    threads = [threading.Thread(target=stream, args=(seed,)) for seed in range(streams)]
    compactor = threading.Thread(target=compacting)
    for thread in [*threads, compactor]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    compactor.join()

    assert statuses == [200] * (streams * batches)  # no 5xx, no deadlock surfaced
    assert sum(moved) > 0
    assert Event.objects.filter(organization=organization).count() == streams * batches * size
    # no lost update: every customer's numbers equal the raw events, with deltas still pending
    # and after a final compaction
    for final_compaction in (False, True):
        if final_compaction:
            compaction.compact_rollups()
        found, _, _ = _differences(meter_list, customers)
        assert found == []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT sum(event_count) FROM {rollups.DAY_TABLE} WHERE meter_id = %s",
            [next(m for m in meter_list if m.aggregation["func"] == "count").pk],
        )
        counted = cursor.fetchone()[0]
    assert counted == Event.objects.filter(organization=organization, name="work").count()


def _rows(table: str, meter) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE meter_id = %s", [meter.pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_compaction_skips_an_organization_locked_exclusively_and_a_redefinition_drops_deltas(
    token_for,
):
    import psycopg

    from tests.support import subprocess_database_url

    organization, _ = token_for("Skip")
    customer = create_customer(organization=organization, email="a@x.io", external_id="a")
    meter = meters.create_meter(
        organization=organization, name="work", filter=WORK, aggregation={"func": "count"}
    )
    hour = datetime(2026, 3, 1, 10, tzinfo=UTC)
    events = [
        {
            "name": "work",
            "customer_id": str(customer.pk),
            "timestamp": (hour + timedelta(minutes=m)).isoformat(),
        }
        for m in (1, 2, 3)
    ]
    ingest.ingest_events(organization=organization, events=events)
    ingest.ingest_events(organization=organization, events=events[:1])
    assert _rows(rollups.DELTA_TABLE, meter) == 2  # one row per transaction
    window = [(hour, hour + timedelta(hours=1))]
    _, total = aggregation.compute(meter, buckets=window, customer_ids=[customer.pk])
    assert total.event_count == 4

    # a backfill chunk or a rebuild holds the organization's lock exclusively: skipped
    with psycopg.connect(subprocess_database_url(), autocommit=True) as other:
        other.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s::text, 7))", [str(organization.pk)]
        )
        assert compaction.compact_organization(organization.pk) is None
        # released here, not by closing (a closed backend lets go asynchronously)
        other.execute(
            "SELECT pg_advisory_unlock(hashtextextended(%s::text, 7))", [str(organization.pk)]
        )
    assert _rows(rollups.DELTA_TABLE, meter) == 2

    assert compaction.compact_organization(organization.pk) == 2
    assert _rows(rollups.DELTA_TABLE, meter) == 0
    assert (_rows(rollups.HOUR_TABLE, meter), _rows(rollups.DAY_TABLE, meter)) == (1, 1)
    _, total = aggregation.compute(meter, buckets=window, customer_ids=[customer.pk])
    assert total.event_count == 4

    # a second batch into the same hour, in one transaction (a caller's atomic block): it adds
    # to that transaction's own row
    with transaction.atomic():
        ingest.ingest_events(organization=organization, events=events[:2])
        ingest.ingest_events(organization=organization, events=events[2:])
    assert _rows(rollups.DELTA_TABLE, meter) == 1
    _, total = aggregation.compute(meter, buckets=window, customer_ids=[customer.pk])
    assert total.event_count == 7

    # a redefinition drops every tier, pending deltas included
    meters.update_meter(meter=meter, aggregation={"func": "sum", "property": "tokens"})
    for table in rollups.ALL_TABLES:
        assert _rows(table, meter) == 0, table
