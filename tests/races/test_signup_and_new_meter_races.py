"""Races that used to lose billable usage, driven as a new user would: three clients ingest for
300 external ids over HTTP while the 300 customers sign up one by one (and use the product at
once), and two meters are created mid-stream. Served by gunicorn (several worker processes);
verified with plain SQL against the raw events, so nothing in the check trusts the code under test.

Before the lock discipline of `metering.locks`, a sign-up overlapping an ingest of its external
id left that ingest's events unlinked forever, and a meter created while an ingest was in flight
was marked ready without that ingest's batch.

Each round is a new organization with the whole scenario (300 sign-ups, both mid-stream meters).
The suite runs two; the soak `bench/soak.py races` runs more (RACE_ROUNDS, docs/performance.md).
The deterministic proof of each race is tests/races/test_lock_discipline.py."""

import itertools
import os
import threading
import time

import httpx
import pytest
from django.db import connection
from tqdm import tqdm

from tests.support import AppServer

CUSTOMERS = 300
CLIENTS = 3
BATCH = 50
ROUNDS = int(os.environ.get("RACE_ROUNDS", "2"))

WORK_FILTER = {
    "conjunction": "and",
    "clauses": [{"property": "name", "operator": "eq", "value": "work"}],
}
MID_STREAM_METERS = [
    ("work count (mid-stream)", {"func": "count"}),
    ("work tokens (mid-stream)", {"func": "sum", "property": "tokens"}),
]

MISSING_SQL = """
WITH raw AS (
    SELECT e.customer_id, count(*) AS events, sum((e.metadata ->> 'tokens')::numeric) AS tokens
    FROM metering_event e
    WHERE e.organization_id = %(org)s AND e.name = 'work' AND e.customer_id IS NOT NULL
    GROUP BY e.customer_id
), rolled AS (
    SELECT r.customer_id, sum(r.event_count) AS events, sum(r.numeric_sum) AS tokens
    FROM metering_meterrollup r WHERE r.meter_id = %(meter)s GROUP BY r.customer_id
)
SELECT count(*) FILTER (WHERE COALESCE(rolled.events, 0) <> raw.events),
       COALESCE(sum(raw.events - COALESCE(rolled.events, 0)), 0)
FROM raw LEFT JOIN rolled USING (customer_id)
"""


@pytest.fixture
def gunicorn(transactional_db):
    server = AppServer(kind="gunicorn", workers=3).start()
    yield server
    server.stop()


def _sql(query: str, params) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()


def _wait_for_backfills(organization_id) -> None:
    """Create-time backfills are queued for a Celery worker; run their body here until every
    meter is ready (what a worker would do)."""
    from metering import backfill
    from metering.models import Meter, MeterState

    for meter in Meter.objects.filter(organization_id=organization_id):
        if meter.state == MeterState.BACKFILLING:
            backfill.backfill(meter.pk)


def _run_round(url: str, secret: str, round_no: int) -> dict:
    headers = {"Authorization": f"Bearer {secret}"}
    signed_up: list[int] = []  # indexes of customers whose sign-up request returned
    done = threading.Event()
    first_batch_sent = threading.Event()
    failures: list[str] = []
    sent = itertools.count()

    def sign_up_all():
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            for i in range(CUSTOMERS):
                response = http.post(
                    "/v1/customers/",
                    json={"email": f"r{round_no}u{i}@example.com", "external_id": f"u{i}"},
                )
                if response.status_code != 201:
                    failures.append(f"sign-up {i}: {response.status_code} {response.text}")
                signed_up.append(i)
                # One meter while the organization's first batches are in flight (no linked
                # event is committed yet, so the meter is ready at once), one later (the meter
                # is backfilled).
                if i == 0:
                    first_batch_sent.wait(30)
                if i in (0, CUSTOMERS // 2):
                    name, aggregation = MID_STREAM_METERS[0 if i == 0 else 1]
                    response = http.post(
                        "/v1/meters/",
                        json={"name": name, "filter": WORK_FILTER, "aggregation": aggregation},
                    )
                    if response.status_code != 201:
                        failures.append(f"meter: {response.status_code} {response.text}")
        done.set()

    def ingest(client_no: int):
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            while not signed_up:  # the first customer signs up before any usage
                time.sleep(0.001)
            while not done.is_set():
                newest = signed_up[-1] if signed_up else -1
                # the customers that just signed up, and a few that are about to
                window = range(max(0, newest - 8), min(CUSTOMERS, newest + 4))
                events = [
                    {
                        "name": "work",
                        "external_customer_id": f"u{window[k % len(window)]}",
                        "external_id": f"c{client_no}-{next(sent)}",
                        "metadata": {"tokens": k % 7},
                    }
                    for k in range(BATCH)
                ]
                first_batch_sent.set()
                response = http.post("/v1/events/ingest", json={"events": events})
                if response.status_code != 200:
                    failures.append(f"ingest: {response.status_code} {response.text}")

    threads = [threading.Thread(target=sign_up_all)] + [
        threading.Thread(target=ingest, args=(n,)) for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"failures": failures, "events": next(sent)}


@pytest.mark.slow
def test_signups_and_new_meters_during_ingest_lose_no_events(gunicorn, token_for):
    from metering.models import Meter

    report = []
    # the bar shows only on a terminal (`bench/soak.py races`), not in a captured run
    for round_no in tqdm(range(ROUNDS), desc="rounds", disable=None):
        organization, secret = token_for(f"Race round {round_no}")
        # a meter that exists from the start: the sign-up race shows in it
        response = httpx.post(
            f"{gunicorn.url}/v1/meters/",
            headers={"Authorization": f"Bearer {secret}"},
            json={"name": "work count", "filter": WORK_FILTER, "aggregation": {"func": "count"}},
        )
        assert response.status_code == 201, response.text
        started = time.monotonic()
        result = _run_round(gunicorn.url, secret, round_no)
        assert result["failures"] == []
        _wait_for_backfills(organization.pk)

        (unlinked,) = _sql(
            "SELECT count(*) FROM metering_event e JOIN customers_customer c "
            "ON c.organization_id = e.organization_id AND c.external_id = e.external_customer_id "
            "WHERE e.organization_id = %s AND e.customer_id IS NULL",
            [organization.pk],
        )
        (stored,) = _sql(
            "SELECT count(*) FROM metering_event WHERE organization_id = %s", [organization.pk]
        )
        per_meter = {}
        for meter in Meter.objects.filter(organization=organization).order_by("name"):
            mismatched, missing = _sql(MISSING_SQL, {"org": organization.pk, "meter": meter.pk})
            per_meter[meter.name] = (mismatched, int(missing))
        report.append(
            {
                "round": round_no,
                "sent": result["events"],
                "stored": stored,
                "unlinked": unlinked,
                "meters": per_meter,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        assert stored == result["events"]
    print(report)
    assert all(r["unlinked"] == 0 for r in report), report
    assert all(m == (0, 0) for r in report for m in r["meters"].values()), report
    assert all(len(r["meters"]) == 3 for r in report)
