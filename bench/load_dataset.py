"""Load the P3/P4 dataset with the project's generator (`manage.py generate_events`, COPY with a
progress bar) into the benchmark database, then create the six demo meters and backfill them.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/meterline_bench .venv/bin/python bench/load_dataset.py

10,000,000 events over 90 days for 750 customers of organization `bench-data` (Zipf-like: the
largest, `gen_cust_000001`, gets ~1,000,000 events), seed 42. Records the load time.

The backfill runs in this process, meter after meter, through `metering.meters.backfill` with
`--chunk-events` (default: unbounded, i.e. one chunk per 200 customers). With the service's
default chunk (200,000 events) it measured ~14,000 events/s per meter here — ~70 minutes for six
meters on 10M events — because each chunk first counts the events of the next 200 customers
(`NEXT_CUSTOMERS_SQL`, ~87 % of the backfill's time in pg_stat_activity samples); see
docs/performance.md. `--skip-generate` only creates/backfills the meters (resumes a backfill).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=750)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--org", default="bench-data")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--chunk-events", type=int, default=10**12)
    parser.add_argument("--skip-generate", action="store_true")
    args = parser.parse_args(argv)
    url = common.database_url()
    common.ensure_database(url)
    info = common.machine_info(url)
    common.print_machine(info)
    result = {"machine": info, "parameters": vars(args)}
    if not args.skip_generate:
        cmd = [
            common.PYTHON, str(common.BASE_DIR / "manage.py"), "generate_events",
            "--events", str(args.events), "--customers", str(args.customers),
            "--days", str(args.days), "--org", args.org, "--seed", str(args.seed),
        ]  # fmt: skip
        print(" ".join(cmd[1:]))
        start = time.perf_counter()
        out = subprocess.run(
            cmd, env=common.server_env(url), cwd=common.BASE_DIR, stdout=subprocess.PIPE, text=True
        )
        print(out.stdout)
        if out.returncode:
            raise SystemExit(out.returncode)
        loaded = re.search(r"in ([0-9.]+) s \(([0-9,]+) events/s\)", out.stdout)
        result["generate_seconds"] = round(time.perf_counter() - start, 1)
        result["copy_seconds"] = float(loaded.group(1)) if loaded else None
    result["backfill_seconds"] = backfill_meters(url, args.org, args.chunk_events)
    common.save_result("load_dataset", result)


def backfill_meters(url: str, org: str, chunk_events: int) -> dict:
    """Create the six demo meters (their backfill task goes to an in-memory broker and is
    dropped), then run each backfill here, timed."""
    import os

    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
    common.bootstrap(url)
    from customers.models import Organization
    from metering import backfill
    from metering.demo import ensure_demo_meters
    from metering.models import Meter, MeterState

    organization = Organization.objects.get(name=org)
    print(ensure_demo_meters(organization))
    timings = {}
    for meter in Meter.objects.filter(organization=organization).order_by("name"):
        if meter.state != MeterState.BACKFILLING:
            continue
        start = time.perf_counter()
        backfill.backfill(meter.pk, chunk_events=chunk_events)
        timings[meter.name] = round(time.perf_counter() - start, 1)
        print(f"backfilled {meter.name} in {timings[meter.name]} s")
    return timings


if __name__ == "__main__":
    main()
