"""P7: the ClickHouse event store (chdb in this process), each figure against its physical
reference in the same run, three runs each (docs/performance.md, docs/scaling.md).

- ingest: `ingest_events` in ClickHouse mode (validation, keys and outbox in PostgreSQL, the
  insert) vs a raw insert of the same rows, same batch size, into the same table;
- close reads: every customer's six meters over the month as a cycle close reads them
  (`window_values` inside `consistent_read`) vs one `GROUP BY customer` scan of the same events.

    .venv/bin/python bench/p7_clickhouse.py [--events 200000] [--customers 500] [--batch 1000]

PostgreSQL is DATABASE_URL's server, database meterline_p7; chdb's folder is fresh each run.
"""

import argparse
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

MONTH = datetime(2025, 3, 1, tzinfo=UTC)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    url = common.with_database(common.database_url(), "meterline_p7")
    common.ensure_database(url)
    folder = tempfile.mkdtemp(prefix="p7-chdb-")
    import os

    os.environ.update(EVENT_STORE="clickhouse", CLICKHOUSE_URL=f"chdb://{folder}")
    common.bootstrap(url)

    from zoneinfo import ZoneInfo

    from customers.models import Customer, Organization
    from metering import meters, quantities, queries
    from metering.customer_meters import active_customer_meters
    from metering.ingest import ingest_events
    from metering.queries import Window
    from metering.stores import clickhouse, clickhouse_schema

    clickhouse_schema.migrate(clickhouse.client(), clickhouse.layout())
    print(
        f"P7 on chdb {folder}: {args.events:,} events, {args.customers} customers, "
        f"batches of {args.batch}, load {common.load_average()}"
    )
    rng = random.Random(7)
    for run in range(1, args.runs + 1):
        org = Organization.objects.create(name=f"p7 {uuid.uuid4()}")
        funcs = ("count", "sum", "avg", "min", "max", "unique")
        made = [
            meters.create_meter(
                organization=org,
                name=f"p7 {f}",
                filter={
                    "conjunction": "and",
                    "clauses": [{"property": "name", "operator": "eq", "value": "llm"}],
                },
                aggregation={"func": f}
                if f == "count"
                else {"func": f, "property": "model" if f == "unique" else "tokens"},
            )
            for f in funcs
        ]
        customers = Customer.objects.bulk_create(
            [
                Customer(organization=org, email=f"c{n}@p7.io", external_id=f"c{n}")
                for n in range(args.customers)
            ]
        )
        batches = []
        for b in range(args.events // args.batch):
            batches.append(
                [
                    {
                        "name": "llm",
                        "customer_id": str(customers[rng.randrange(args.customers)].pk),
                        "timestamp": (
                            MONTH + timedelta(seconds=rng.randrange(28 * 86400))
                        ).isoformat(),
                        "external_id": f"{run}-{b}-{n}",
                        "metadata": {
                            "tokens": Decimal(rng.randrange(1, 10**6)) / 100,
                            "model": rng.choice(["gpt-4o", "gpt-4o-mini", "claude"]),
                        },
                    }
                    for n in range(args.batch)
                ]
            )
        started = time.perf_counter()
        for batch in batches:
            ingest_events(organization=org, events=batch)
        ingest_s = time.perf_counter() - started
        # the raw reference: the same rows as the store wrote them, under another organization
        raw_org = uuid.uuid4()
        rows = (
            clickhouse.client()
            .query(f"SELECT * FROM {clickhouse.layout().events} WHERE organization_id = '{org.pk}'")
            .result_rows
        )
        rows = [[raw_org, *r[1:]] for r in rows]
        started = time.perf_counter()
        for n in range(0, len(rows), args.batch):
            clickhouse.client().insert(
                clickhouse.layout().events,
                rows[n : n + args.batch],
                column_names=clickhouse.COLUMNS,
            )
        raw_s = time.perf_counter() - started
        windows = [
            Window((c.pk, m.pk), m, c.pk, ((MONTH, MONTH + timedelta(days=31)),))
            for c in customers
            for m in made
        ]
        started = time.perf_counter()
        with queries.consistent_read():
            queries.window_values(windows)
        close_s = time.perf_counter() - started
        started = time.perf_counter()
        scanned = (
            clickhouse.client()
            .query(
                f"SELECT customer_id, count(), sum(numbers['tokens']), min(numbers['tokens']), "
                f"max(numbers['tokens']), uniqExact(strings['model']) "
                f"FROM {clickhouse.layout().events} FINAL WHERE organization_id = '{org.pk}' "
                "GROUP BY customer_id"
            )
            .result_rows
        )
        scan_s = time.perf_counter() - started
        assert len(scanned) <= args.customers
        # P3/P4 on this store: a customer's state (its six customer meters), and quantities
        # over the month by day, for 50 customers each
        state_ms, quantity_ms = [], []
        for customer in customers[:50]:
            started = time.perf_counter()
            active_customer_meters(customer=customer)
            state_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            quantities.quantities(
                made[1],
                start=MONTH,
                end=MONTH + timedelta(days=28),
                interval="day",
                zone=ZoneInfo("UTC"),
                customer_ids=[customer.pk],
                customer_aggregation_function=None,
                metadata=None,
            )
            quantity_ms.append((time.perf_counter() - started) * 1000)
        state, quantity = common.percentiles(state_ms), common.percentiles(quantity_ms)
        n = len(rows)
        print(
            f"run {run}: customer state {common.fmt_ms(state)}; "
            f"quantities 28 days x day {common.fmt_ms(quantity)}"
        )
        print(
            f"run {run}: ingest {n / ingest_s:,.0f} ev/s vs raw insert {n / raw_s:,.0f} ev/s = "
            f"{raw_s / ingest_s:.2f}x; close reads {close_s:.2f} s vs one scan {scan_s:.3f} s = "
            f"{close_s / scan_s:.1f}x; load {common.load_average()}"
        )


if __name__ == "__main__":
    main()
