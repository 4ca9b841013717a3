"""Every event is in exactly one period's set, whatever ingests run while periods close.

Real processes: three clients ingest over HTTP into gunicorn (worker processes) without pause,
events with timestamps spread over eight daily periods (so most of them arrive while their period
closes, or after it closed), while the test process closes one day after the other (the first
day in a `manage.py close_cycles` process). Six meters price the same events, one per
aggregation.

Two checks:

- independent of how Meterline reads: every event has its own `unique` key, so the `unique`
  lines of a subscription add up to the number of its events exactly when every event is in
  exactly one set (twice or never would show); count and sum lines add up to the totals;
- each invoice records the read boundary its close used and the one its late set began at:
  reconstructed from those (the events each boundary saw), the sets partition the events, and
  every line — count, sum, avg, min, max, unique — equals its aggregation over its set.

Before read boundaries were committed snapshots, the close took a wall-clock instant before
reading, and an ingest that began after it but committed before the read was billed twice (in
its period and again as late usage of the next), one that began before and committed after was
never billed."""

import os
import random
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from billing import catalog, cycles, subscriptions
from billing.models import InvoiceLine
from customers.models import Customer
from metering import meters
from metering.models import Event
from tests.billing.conftest import at, named, unit_price
from tests.billing.usage_sets import sets_of, value_of
from tests.support import AppServer, subprocess_database_url

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
START = at("2025-03-01T00:00:00")
DAYS = 8
CUSTOMERS = ("c0", "c1", "c2")
CLIENTS = 3
BATCH = 6
AGGREGATIONS = {
    "count": {"func": "count"},
    "sum": {"func": "sum", "property": "v"},
    "avg": {"func": "avg", "property": "v"},
    "min": {"func": "min", "property": "v"},
    "max": {"func": "max", "property": "v"},
    "unique": {"func": "unique", "property": "k"},
}


def close_cycles(as_of) -> None:
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "CONN_MAX_AGE": "0"}
    env.pop("TEST_DATABASE_NAME", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "close_cycles", "--as-of", as_of.isoformat()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def ingest_until(url: str, token: str, stop: threading.Event, seed: int, errors: list) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        while not stop.is_set():
            events = [
                {
                    "name": "req",
                    "external_customer_id": rng.choice(CUSTOMERS),
                    "timestamp": (
                        START + timedelta(seconds=rng.randrange(DAYS * 86400))
                    ).isoformat(),
                    "external_id": uuid.uuid4().hex,
                    "metadata": {"v": rng.randrange(1, 10_000), "k": uuid.uuid4().hex},
                }
                for _ in range(BATCH)
            ]
            response = client.post("/v1/events/ingest", json={"events": events}, timeout=30)
            if response.status_code != 200:
                errors.append(response.text)
                return


def test_every_event_is_in_exactly_one_periods_set_while_closes_and_ingests_interleave(token_for):
    org, token = token_for("Race Org")
    by_func = {
        func: meters.create_meter(
            organization=org, name=f"req {func}", filter=named("req"), aggregation=aggregation_
        )
        for func, aggregation_ in AGGREGATIONS.items()
    }
    product = catalog.create_product(
        organization=org,
        name="Everything",
        recurring_interval="day",
        prices=[unit_price(meter, 1) for meter in by_func.values()],
    )
    subs = [
        subscriptions.create_subscription(
            customer=Customer.objects.create(
                organization=org, email=f"{name}@example.com", external_id=name
            ),
            product=product,
            started_at=START,
        )
        for name in CUSTOMERS
    ]
    server = AppServer(kind="gunicorn", workers=2).start()
    stop, errors = threading.Event(), []
    clients = [
        threading.Thread(target=ingest_until, args=(server.url, token, stop, seed, errors))
        for seed in range(CLIENTS)
    ]
    try:
        for client in clients:
            client.start()
        close_cycles(START + timedelta(days=1, hours=1))
        for day in range(2, DAYS + 1):
            cycles.close_due(as_of=START + timedelta(days=day, hours=1))
    finally:
        stop.set()
        for client in clients:
            client.join(60)
        server.stop()
    assert errors == []
    # everything that arrived after the last close is late usage of the period after it
    cycles.close_due(as_of=START + timedelta(days=DAYS + 2, hours=1))

    for subscription in subs:
        # independent of Meterline's reads: the raw events and the lines' sums
        values = list(
            Event.objects.filter(customer=subscription.customer, name="req").values_list(
                "metadata", flat=True
            )
        )
        assert len(values) > 50  # the clients really ran
        lines = InvoiceLine.objects.filter(invoice__subscription=subscription)
        billed = {
            func: sum(
                lines.filter(meter=by_func[func]).values_list("consumed_units", flat=True),
                Decimal(0),
            )
            for func in ("count", "sum", "unique")
        }
        assert billed == {
            "count": len(values),
            "sum": sum(Decimal(value["v"]) for value in values),
            "unique": len(values),
        }
        # the sets each invoice's boundaries define
        for func, meter in by_func.items():
            sets = sets_of(subscription, meter, START)
            memberships = Counter(event.id for _line, events in sets for event in events)
            assert sum(memberships.values()) == len(values)
            assert set(memberships.values()) == {1}
            for line, events in sets:
                assert line.consumed_units == value_of(func, events), (func, line.period_start)
