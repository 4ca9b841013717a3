"""Backfill benchmark: a meter created over 1,000,000 stored events is correct during and after
its backfill.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/meterline_bench DEBUG=1 \
        .venv/bin/python bench/backfill_1m.py [--events 1000000]

Loads the events with `generate_events` (COPY) into a fresh organization, creates a `sum` meter
(state: backfilling), then runs the backfill chunk by chunk while a reader thread keeps reading
customer numbers through the public read path and compares them with a direct SQL sum.
Prints the figures and writes bench/results/backfill_1m.json.
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402

from customers.models import Customer, Organization  # noqa: E402
from metering import backfill, customer_meters, meters  # noqa: E402
from metering.models import Meter, MeterState  # noqa: E402

EXPECTED_SQL = """
SELECT COALESCE(sum((metadata->>'total_tokens')::numeric), 0) FROM metering_event
WHERE customer_id = %s AND name = 'llm.completion' AND source = 'user'
  AND jsonb_typeof(metadata->'total_tokens') = 'number'
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()

    org_name = f"backfill-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    call_command(
        "generate_events",
        events=args.events,
        customers=args.customers,
        days=60,
        org=org_name,
        skip_rollups=True,
    )
    load_seconds = time.perf_counter() - started
    organization = Organization.objects.get(name=org_name)
    customers = list(
        Customer.objects.filter(organization=organization).order_by("id")[
            :: max(1, args.customers // 8)
        ]
    )
    with connection.cursor() as cursor:
        expected = {}
        for customer in customers:
            cursor.execute(EXPECTED_SQL, [customer.pk])
            expected[customer.pk] = Decimal(cursor.fetchone()[0])

    meter = meters.create_meter(
        organization=organization,
        name="LLM tokens (backfill bench)",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "llm.completion"}],
        },
        aggregation={"func": "sum", "property": "total_tokens"},
    )
    assert meter.state == MeterState.BACKFILLING, meter.state

    reads = {"total": 0, "wrong": 0, "during_backfill": 0, "latencies": []}
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                for customer in customers:
                    fresh = Meter.objects.get(pk=meter.pk)
                    t = time.perf_counter()
                    numbers = customer_meters.numbers_for(fresh, customer)
                    reads["latencies"].append(time.perf_counter() - t)
                    reads["total"] += 1
                    reads["during_backfill"] += fresh.state == MeterState.BACKFILLING
                    if Decimal(numbers.consumed_units) != expected[customer.pk]:
                        reads["wrong"] += 1
        finally:
            connections.close_all()

    thread = threading.Thread(target=reader)
    thread.start()
    started = time.perf_counter()
    chunks = 0
    while not backfill.backfill_step(meter.pk, meter.definition_version):
        chunks += 1
    backfill_seconds = time.perf_counter() - started
    stop.set()
    thread.join()

    meter.refresh_from_db()
    after_wrong = sum(
        Decimal(customer_meters.numbers_for(meter, c).consumed_units) != expected[c.pk]
        for c in customers
    )
    latencies = sorted(reads["latencies"])
    result = {
        "events": args.events,
        "load_seconds": round(load_seconds, 1),
        "backfill_seconds": round(backfill_seconds, 1),
        "backfill_chunks": chunks + 1,
        "backfill_events_done": meter.backfill_events_done,
        "meter_state_after": meter.state,
        "reads_during": reads["during_backfill"],
        "reads_total": reads["total"],
        "wrong_reads": reads["wrong"],
        "wrong_after": after_wrong,
        "read_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "read_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1)
        if latencies
        else None,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "backfill_1m.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
