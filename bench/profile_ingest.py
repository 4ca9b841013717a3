"""Where an ingest batch spends its time: runs `ingest.ingest_events` in-process (no HTTP) for
a few 1,000-event batches of the P1 workload and times every SQL statement (grouped by its first
words) and the Python part (validation, parameter building).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/meterline_bench \
        .venv/bin/python bench/profile_ingest.py [--batches 20] [--no-meters]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, workload  # noqa: E402


def label(sql: str) -> str:
    text = re.sub(r"\s+", " ", sql).strip()
    if "metering_meterrollup_delta" in text and "WITH ev AS" in text:
        return "rollup deltas (all meters, one statement)"
    for key, name in (
        ("INSERT INTO metering_eventname", "event names upsert"),
        ("INSERT INTO metering_event ", "insert events"),
        ("UPDATE customers_customer c SET first_user_event_at", "first_user_event_at"),
        ("pg_advisory_xact_lock", "advisory lock"),
        ("FROM metering_meter WHERE organization_id", "organization meters"),
        ("UPDATE metering_event e SET parent_id", "resolve parents"),
        ("UPDATE metering_event c SET parent_id", "adopt children"),
        ('FROM "customers_customer"', "customer lookup"),
    ):
        if key in text:
            return name
    return text[:60]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--no-meters", action="store_true")
    parser.add_argument(
        "--pyinstrument", action="store_true", help="also print a pyinstrument call tree"
    )
    args = parser.parse_args(argv)
    url = common.database_url()
    common.ensure_database(url)
    common.bootstrap(url)
    from bench.p1_ingest import cleanup
    from metering import ingest

    info = common.machine_info(url)
    common.print_machine(info)
    run_id = uuid.uuid4().hex[:8]
    organization, _, meter_ids = workload.setup_organization(
        name=f"bench-p1-{run_id}", customers=args.customers, with_meters=not args.no_meters
    )
    batches = workload.make_batches(
        seed=7,
        run_id=run_id,
        batches=args.batches + 2,
        batch_size=args.batch,
        customers=args.customers,
    )
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    import psycopg

    original = psycopg.Cursor.execute

    def timed_execute(self, query, params=None, **kwargs):
        # every statement, Django's and the raw psycopg cursors of the ingest path alike
        start = time.perf_counter()
        try:
            return original(self, query, params, **kwargs)
        finally:
            if measuring:
                sql = query if isinstance(query, str) else str(query)
                key = label(sql)
                totals[key] += time.perf_counter() - start
                counts[key] += 1

    psycopg.Cursor.execute = timed_execute
    measuring = False

    import json

    for batch in batches[:2]:  # warm-up (statement caches, plans)
        ingest.ingest_events(
            organization=organization, events=json.loads(workload.body(batch))["events"]
        )
    totals.clear()
    counts.clear()
    wall = 0.0
    from core.strict_json import loads

    bodies = [workload.body(batch) for batch in batches[2:]]
    profiler = None
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    measuring = True
    for body in bodies:
        start = time.perf_counter()
        # what the view does: parse the body (strict JSON, exact decimals), then ingest
        events = loads(body)["events"]
        ingest.ingest_events(organization=organization, events=events)
        wall += time.perf_counter() - start
    measuring = False
    if profiler:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    sql_total = sum(totals.values())
    n = args.batches
    print(f"{n} batches x {args.batch} events, {len(meter_ids)} meters, one process, no HTTP")
    print(f"per batch: {wall / n * 1000:.1f} ms total -> {n * args.batch / wall:,.0f} events/s")
    print(
        f"  outside SQL statements (JSON parsing, validation, parameters, COMMIT): "
        f"{(wall - sql_total) / n * 1000:.1f} ms"
    )
    for key, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds / n * 1000:8.1f} ms  x{counts[key] // n:<3} {key}")
    cleanup([organization.pk])


if __name__ == "__main__":
    main()
