"""Backfill: a meter created over stored events shows correct numbers during and after the
backfill, while ingestion goes on; one end-to-end run with a real Celery worker."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import override_settings  # noqa: F401

from customers.models import Organization
from customers.services import create_customer
from metering import aggregation, backfill, customer_meters, ingest, meters
from metering.models import MeterState
from tests.support import subprocess_database_url

BASE = datetime(2025, 2, 3, 0, 0, tzinfo=UTC)
SUM_TOKENS = {"func": "sum", "property": "tokens"}
ALL = {"conjunction": "and", "clauses": [{"property": "name", "operator": "eq", "value": "llm"}]}


def send(organization, customer_ids, hour, count=3):
    ingest.ingest_events(
        organization=organization,
        events=[
            {
                "name": "llm" if i % 3 else "other",
                "external_customer_id": external_id,
                "timestamp": (BASE + timedelta(hours=hour, minutes=7 * i)).isoformat(),
                "metadata": {"tokens": 10 + i},
            }
            for external_id in customer_ids
            for i in range(count)
        ],
    )


def expected_for(organization, customer=None):
    """Recompute from raw events, in Python."""
    from metering.models import Event

    events = Event.objects.filter(organization=organization, customer__isnull=False, source="user")
    if customer is not None:
        events = events.filter(customer=customer)
    rows = [
        {"name": e.name, "source": e.source, "timestamp": e.timestamp, "metadata": e.metadata}
        for e in events
    ]
    return aggregation.final_value(
        "sum", aggregation.python_partial(ALL, SUM_TOKENS, _decimalize(rows))
    )


def _decimalize(rows):
    from decimal import Decimal

    for row in rows:
        row["metadata"] = {
            k: Decimal(str(v)) if isinstance(v, float) else v for k, v in row["metadata"].items()
        }
    return rows


@pytest.mark.django_db
def test_numbers_correct_during_and_after_backfill():
    organization = Organization.objects.create(name="Backfill Org")
    externals = [f"b{i}" for i in range(12)]
    customers = [
        create_customer(organization=organization, email=f"{x}@x.io", external_id=x)
        for x in externals
    ]
    for hour in range(0, 30, 3):
        send(organization, externals, hour)
    meter = meters.create_meter(
        organization=organization, name="tokens", filter=ALL, aggregation=SUM_TOKENS
    )
    assert meter.state == MeterState.BACKFILLING

    def check():
        meter.refresh_from_db()
        window = [(BASE - timedelta(days=1), BASE + timedelta(days=3))]
        _, total = aggregation.compute(
            meter, buckets=window, use_rollups=meter.state == MeterState.READY
        )
        assert aggregation.final_value("sum", total) == expected_for(organization)
        for customer in customers[::5]:
            numbers = customer_meters.numbers_for(meter, customer)
            assert numbers.consumed_units == expected_for(organization, customer)
        # rollups are exact for every customer the backfill has passed
        _, rolled = aggregation.compute(
            meter,
            buckets=window,
            customer_ids=[
                c.pk
                for c in customers
                if meter.state == MeterState.READY
                or (meter.backfill_cursor and c.pk <= meter.backfill_cursor)
            ],
        )
        _, raw = aggregation.compute(
            meter,
            buckets=window,
            use_rollups=False,
            customer_ids=[
                c.pk
                for c in customers
                if meter.state == MeterState.READY
                or (meter.backfill_cursor and c.pk <= meter.backfill_cursor)
            ],
        )
        assert rolled.numeric_sum == raw.numeric_sum
        assert rolled.event_count == raw.event_count

    check()
    steps = 0
    # chunks of ~20 events = 2 customers; ingestion continues between chunks
    while not backfill.backfill_step(meter.pk, chunk_events=20):
        steps += 1
        meter.refresh_from_db()
        assert 0 < meter.backfill_progress <= 1
        send(organization, externals[steps % 12 :: 4], 40 + steps, count=2)
        check()
    assert steps >= 5
    meter.refresh_from_db()
    assert meter.state == MeterState.READY and meter.backfill_progress == 1.0
    send(organization, externals, 60)
    check()


@pytest.mark.django_db
def test_update_rebuilds_and_management_command():
    from django.core.management import call_command

    organization = Organization.objects.create(name="Rebuild Org")
    customer = create_customer(organization=organization, email="r@x.io", external_id="r1")
    send(organization, ["r1"], 0, count=6)
    meter = meters.create_meter(
        organization=organization, name="count", filter=ALL, aggregation={"func": "count"}
    )
    call_command("backfill_meter", str(meter.pk), stdout=open(os.devnull, "w"))  # noqa: SIM115
    meter.refresh_from_db()
    assert meter.state == MeterState.READY
    assert customer_meters.numbers_for(meter, customer).consumed_units == 4  # i % 3 != 0 of 0..5
    meter = meters.update_meter(meter=meter, aggregation=SUM_TOKENS)
    assert meter.state == MeterState.BACKFILLING and meter.definition_version == 2
    # during the rebuild: raw path, already the new definition
    assert customer_meters.numbers_for(meter, customer).consumed_units == expected_for(organization)
    call_command("backfill_meter", str(meter.pk), stdout=open(os.devnull, "w"))  # noqa: SIM115
    meter.refresh_from_db()
    assert meter.state == MeterState.READY
    assert customer_meters.numbers_for(meter, customer).consumed_units == expected_for(organization)
    # a stale task for the old definition does nothing
    assert backfill.backfill_step(meter.pk, 1) is True


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_backfill_with_a_real_celery_worker(tmp_path, monkeypatch):
    from kombu import Connection

    from metering.tasks import backfill_meter

    monkeypatch.setattr(meters, "_enqueue_backfill", lambda meter: None)
    organization = Organization.objects.create(name="Worker Org")
    externals = [f"w{i}" for i in range(5)]
    customers = [
        create_customer(organization=organization, email=f"{x}@x.io", external_id=x)
        for x in externals
    ]
    for hour in range(0, 12, 2):
        send(organization, externals, hour)
    meter = meters.create_meter(
        organization=organization, name="tokens", filter=ALL, aggregation=SUM_TOKENS
    )
    assert meter.state == MeterState.BACKFILLING
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "METERLINE_DATA_DIR": str(data_dir),
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    env.pop("CELERY_BROKER_URL", None)
    env.pop("TEST_DATABASE_NAME", None)
    repo = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-l", "warning"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        from config.embedded import filesystem_broker

        broker_url, transport_options = filesystem_broker(data_dir)
        broker = Connection(broker_url, transport_options=transport_options)
        with broker:
            backfill_meter.apply_async(
                args=[str(meter.pk), meter.definition_version], connection=broker
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            meter.refresh_from_db()
            if meter.state == MeterState.READY:
                break
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        assert meter.state == MeterState.READY, "the worker did not finish the backfill"
        assert meter.backfill_events_done == meter.backfill_events_total == 5 * 6 * 3
        for customer in customers:
            assert customer_meters.numbers_for(meter, customer).consumed_units == expected_for(
                organization, customer
            )
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
