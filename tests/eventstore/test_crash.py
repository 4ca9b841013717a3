"""A crash between the PostgreSQL commit and the ClickHouse insert: a real ingesting process is
killed (SIGKILL) right after its transaction committed, before its batch reached ClickHouse.
The relay then delivers it: nothing lost, nothing twice, and the keys still say duplicate."""

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from customers.services import create_customer
from metering import meters
from metering.customer_meters import active_customer_meters
from metering.ingest import ingest_events
from metering.models import EventBatch, EventKey
from metering.stores import clickhouse
from tests.support import subprocess_database_url

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]

# The child ingests; its batch commits, then the insert into ClickHouse announces itself and
# waits to be killed. It never opens the chdb folder (one process per folder).
CHILD = """
import json, sys, time
import django
django.setup()
from customers.models import Organization
from metering.ingest import ingest_events
from metering.stores import clickhouse

def killed_here(rows, batch_id):
    print("committed", batch_id, flush=True)
    time.sleep(600)

clickhouse._insert = killed_here
organization = Organization.objects.get(pk=sys.argv[1])
ingest_events(organization=organization, events=json.loads(sys.argv[2]))
"""

EVENTS = [
    {"name": "llm", "external_customer_id": "ada", "external_id": f"e{n}", "metadata": {"t": n}}
    for n in range(1, 6)
] + [{"name": "llm", "external_customer_id": "ada", "metadata": {"t": 0.5}}]


@pytest.mark.parametrize("store", ["clickhouse"], indirect=True)
def test_a_process_killed_after_commit_loses_and_duplicates_nothing(store, token_for):
    organization = token_for("Crash")[0]
    meter = meters.create_meter(
        organization=organization,
        name="tokens",
        filter={"conjunction": "and", "clauses": []},
        aggregation={"func": "sum", "property": "t"},
    )
    ada = create_customer(organization=organization, email="ada@x.io", external_id="ada")
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "EVENT_STORE": "clickhouse",
        "CLICKHOUSE_URL": "chdb:///nonexistent-never-opened",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(organization.pk), json.dumps(EVENTS)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("committed"), line
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    batch = EventBatch.objects.get(organization=organization)
    assert batch.delivered_at is None and batch.event_count == 6
    assert EventKey.objects.filter(organization=organization).count() == 5

    def consumed():
        return [n.consumed_units for _, n in active_customer_meters(customer=ada)]

    assert consumed() == [0]  # accepted, not in ClickHouse yet
    assert clickhouse.relay(min_age=timedelta(0)) == 1
    assert clickhouse.relay(min_age=timedelta(0)) == 0
    assert consumed() == [Decimal("15.5")]
    again = ingest_events(organization=organization, events=EVENTS)
    assert (again.inserted, again.duplicates) == (1, 5)  # the one without a key is new
    assert consumed() == [Decimal("16")]
    assert meter.pk in {cm.meter_id for cm, _ in active_customer_meters(customer=ada)}
