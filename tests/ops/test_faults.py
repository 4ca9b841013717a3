"""Faults with real processes: the broker stopped during ingest, the database connection killed
in the middle of a batch, a worker SIGKILLed in the middle of a backfill. Each ends with exact
numbers: nothing lost, nothing counted twice."""

import threading
import time
from collections import Counter

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from meterline import Meterline, RetryPolicy
from polar.v2026_10 import Polar

from core.models import PendingTask
from core.schedules import ensure_schedules
from customers.services import create_customer
from customers.tokens import create_token
from tests.ops.processes import RedisServer, app_env, beat, wait_for, web, worker
from tests.support import subprocess_database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

KILLS = 3
TOKENS_METER = {
    "name": "Tokens",
    "filter": {
        "conjunction": "and",
        "clauses": [{"property": "name", "operator": "eq", "value": "llm"}],
    },
    "aggregation": {"func": "sum", "property": "tokens"},
}


def meter_state(meter_id) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT state FROM metering_meter WHERE id = %s", [meter_id])
        return cursor.fetchone()[0]


def consumed(polar: Polar, meter_id: str) -> dict[str, float]:
    items = polar.customer_meters.list(meter_id=meter_id, limit=100).items
    return {item.customer.external_id: item.consumed_units for item in items}


def state_numbers(polar: Polar, meter_id: str) -> dict[str, float]:
    """Each customer's consumed units on the meter, from the customer-state endpoint."""
    numbers = {}
    for customer in polar.customers.list(limit=100).items:
        for usage in polar.customers.get_state(customer.id).active_meters:
            if usage.meter_id == meter_id:
                numbers[customer.external_id] = usage.consumed_units
    return numbers


def sdk(secret: str, url: str, errors: list) -> Meterline:
    return Meterline(
        secret,
        base_url=url,
        batch_size=100,
        flush_interval=0.01,
        retry=RetryPolicy(max_retries=100, backoff_base=0.05, backoff_max=0.3),
        on_error=errors.append,
    )


def send_llm_events(client: Meterline, count: int, start: int) -> Counter:
    """`count` events of 1..7 tokens over ten customers; returns the tokens per customer."""
    expected: Counter = Counter()
    for i in range(start, start + count):
        customer, tokens = f"c{i % 10}", i % 7 + 1
        client.ingest(
            {"name": "llm", "external_customer_id": customer, "metadata": {"tokens": tokens}}
        )
        expected[customer] += tokens
    return expected


def test_broker_down_ingest_goes_on_and_the_backfill_runs_when_it_is_back(
    settings, tmp_path, token_for
):
    org, secret = token_for("Broker outage")
    for n in range(10):
        create_customer(organization=org, email=f"c{n}@example.com", external_id=f"c{n}")
    settings.OUTBOX_RESEND_INTERVAL_SECONDS = 1
    ensure_schedules()  # beat (below) reads this schedule from the database
    redis = RedisServer().start()
    env = app_env(
        CELERY_BROKER_URL=redis.url, OUTBOX_RESEND_INTERVAL_SECONDS="1", LOG_LEVEL="ERROR"
    )
    server, url = web(env)
    processes = [server, worker(env), beat(env, tmp_path / "beat-schedule")]
    errors: list = []
    client = sdk(secret, url, errors)
    try:
        expected = send_llm_events(client, 300, 0)
        assert client.flush(timeout=60)

        redis.kill()  # the broker is gone
        expected += send_llm_events(client, 300, 300)
        assert client.flush(timeout=60)
        with Polar(secret, base_url=url) as polar:
            meter = polar.meters.create(**TOKENS_METER)  # enqueues its backfill: not sendable
            assert meter_state(meter.id) == "backfilling"
            (pending,) = PendingTask.objects.filter(name="metering.tasks.backfill_meter")
            assert pending.last_error.startswith("publish: ")
            expected += send_llm_events(client, 300, 600)  # ingest with a backfilling meter
            assert client.flush(timeout=60)
            # meanwhile reads take the raw path and are exact
            assert state_numbers(polar, meter.id) == {c: float(n) for c, n in expected.items()}

            back_at = time.time()
            redis.start()  # same port: beat, worker and web reconnect by themselves
            wait_for(lambda: meter_state(meter.id) == "ready", 90, "the backfill to finish")
            assert state_numbers(polar, meter.id) == {c: float(n) for c, n in expected.items()}
            assert consumed(polar, meter.id) == {c: float(n) for c, n in expected.items()}
        assert not PendingTask.objects.exists()
        from django_celery_beat.models import PeriodicTask

        resend = PeriodicTask.objects.get(name="resend pending tasks")
        assert resend.last_run_at.timestamp() > back_at  # scheduled work resumed
        assert client.close(timeout=30)
        stats = client.stats
        assert (stats.sent, stats.failed, stats.dropped, errors) == (900, 0, 0, [])
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM metering_event WHERE organization_id = %s AND name = 'llm'",
                [org.pk],
            )
            assert cursor.fetchone()[0] == 900
    finally:
        client.close(timeout=5)
        for process in [*processes, redis]:
            process.kill()


def test_database_connection_killed_mid_batch_the_sdk_retries_and_stores_each_event_once(
    token_for,
):
    org, secret = token_for("Killed connections")
    server, url = web(app_env())
    stop = threading.Event()
    killed: list[int] = []

    admin_url = subprocess_database_url()  # here: in the thread it would open a connection

    def kill_in_flight_batches() -> None:
        """Terminate the server's connection under the first few batches it is writing."""
        with psycopg.connect(admin_url, autocommit=True) as admin:
            while not stop.is_set() and len(killed) < KILLS:
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s AND state = 'active' "
                    "AND query ILIKE '%%metering_event%%'",
                    [server.application_name],
                ).fetchall()
                killed.extend(1 for (done,) in rows if done)
                time.sleep(0.005)

    killer = threading.Thread(target=kill_in_flight_batches)
    errors: list = []
    client = Meterline(
        secret,
        base_url=url,
        batch_size=500,
        flush_interval=0.01,
        retry=RetryPolicy(max_retries=200, backoff_base=0.02, backoff_max=0.2),
        on_error=errors.append,
    )
    ids = []
    try:
        killer.start()
        for i in range(6000):
            ids.append(
                client.ingest(
                    {"name": "k", "external_customer_id": f"u{i % 13}", "metadata": {"i": i}}
                )
            )
            if len(killed) >= 3 and i > 3000:
                stop.set()  # enough connections killed under load; let the rest through
        assert client.close(timeout=120)
    finally:
        stop.set()
        killer.join(10)
        server.kill()
    stats = client.stats
    assert len(killed) == KILLS, "the killer did not catch enough batches in flight"
    # (a kill can land as the statement finishes and cost no retry; most cost one)
    assert stats.retries >= 1
    assert (stats.failed, stats.dropped, errors) == (0, 0, [])
    assert stats.sent + stats.duplicates == 6000
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT external_id), sum((metadata->>'i')::int) "
            "FROM metering_event WHERE organization_id = %s",
            [org.pk],
        )
        assert cursor.fetchone() == (6000, 6000, sum(range(6000)))
        cursor.execute(
            "SELECT external_id FROM metering_event WHERE organization_id = %s", [org.pk]
        )
        assert {row[0] for row in cursor.fetchall()} == set(ids)


def test_worker_killed_mid_backfill_the_next_worker_completes_it(tmp_path):
    call_command(
        "generate_events",
        events=60_000,
        customers=40,
        days=30,
        org="Killed worker",
        seed=7,
        stdout=open("/dev/null", "w"),  # noqa: SIM115
    )
    _, secret = create_token(organization_name="Killed worker", label="tests")
    data_dir = tmp_path / "data"
    base = app_env(METERLINE_DATA_DIR=str(data_dir), OUTBOX_LEASE_SECONDS="3")
    server, url = web(base)
    with Polar(secret, base_url=url) as polar:
        meter = polar.meters.create(
            name="Requests",
            filter={
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": "api.request"}],
            },
            aggregation={"func": "count"},
        )
        assert meter_state(meter.id) == "backfilling"
        raw = state_numbers(polar, meter.id)  # while backfilling: the raw path
        assert sum(raw.values()) > 20_000

        first = worker(base, "worker-1")
        admin = psycopg.connect(subprocess_database_url(), autocommit=True)

        def rolling_up() -> bool:
            return bool(
                admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                    "AND state = 'active' AND query ILIKE '%%meterrollup%%'",
                    [first.application_name],
                ).fetchone()
            )

        try:
            wait_for(rolling_up, 60, "the backfill to start writing rollups", interval=0.01)
            first.kill()  # SIGKILL, mid-statement
        finally:
            admin.close()
        assert meter_state(meter.id) == "backfilling"
        with connection.cursor() as cursor:  # the chunk in flight left nothing behind
            cursor.execute(
                "SELECT count(*) FROM metering_meterrollup WHERE meter_id = %s", [meter.id]
            )
            rolled = cursor.fetchone()[0]
            cursor.execute("SELECT backfill_cursor FROM metering_meter WHERE id = %s", [meter.id])
            assert (rolled == 0) == (cursor.fetchone()[0] is None)
        assert PendingTask.objects.filter(name="metering.tasks.backfill_meter").count() == 1

        time.sleep(3)  # the lease of the killed worker's task runs out
        second = worker(base, "worker-2")  # resends it at start-up
        try:
            wait_for(lambda: meter_state(meter.id) == "ready", 120, "the next run to finish")
            assert state_numbers(polar, meter.id) == raw
            assert consumed(polar, meter.id) == raw
        finally:
            second.kill()
            server.kill()
    assert not PendingTask.objects.exists()
