"""P5 + P6 (worker): the cycle close of N due subscriptions with 3 metered prices each, against
one `GROUP BY` over the same events in the same run; the closing process's RSS is sampled
throughout (bounded = flat after warm-up).

    .venv/bin/python bench/run.py p5 [--subscriptions 1000] [--events 500000]

The dataset (its own database, `meterline_bench_p5` on DATABASE_URL's server) is generated once
with `generate_events` and reused; billing rows are reset before every run, so each run closes
exactly N periods. Targets (docs/performance.md): close ≤ 3× the scan and ≤ 60 s at 10,000
subscriptions on 10M events.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time
from datetime import timedelta

from tqdm import tqdm

from bench.common import (
    bootstrap,
    database_url,
    ensure_database,
    machine_info,
    print_machine,
    save_result,
    with_database,
)

ORG = "P5 bench"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--database", default="meterline_bench_p5")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="closing processes, as Celery workers take the beat's batches (default 1)",
    )
    return parser.parse_args(argv)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.samples, self.running = every, [], True

    def run(self):
        while self.running:
            self.samples.append(rss_kib())
            time.sleep(self.every)

    def stop(self) -> list[int]:
        self.running = False
        self.join()
        return self.samples


def load(args) -> None:
    from django.core.management import call_command

    from customers.models import Organization
    from metering import backfill, meters
    from metering.models import Event, Meter

    organization = Organization.objects.filter(name=ORG).first()
    if organization is None or not Event.objects.filter(organization=organization).exists():
        call_command(
            "generate_events",
            events=args.events,
            customers=args.subscriptions,
            days=args.days,
            org=ORG,
            seed=5,
            meters=True,
            skip_rollups=True,
        )
        organization = Organization.objects.get(name=ORG)
    if not Meter.objects.filter(organization=organization, name="Uploaded bytes").exists():
        meters.create_meter(
            organization=organization,
            name="Uploaded bytes",
            filter={
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": "storage.upload"}],
            },
            aggregation={"func": "sum", "property": "bytes"},
        )
    # One chunk per 200 customers: the service's default chunk recounts the next customers'
    # events for every chunk, which takes an hour on 10M events (docs/performance.md).
    for meter in Meter.objects.filter(organization=organization).exclude(state="ready"):
        began = time.perf_counter()
        backfill.backfill(meter.pk, chunk_events=10**12)
        print(f"backfilled {meter.name} in {time.perf_counter() - began:.1f} s")


def reset_and_subscribe(organization, count: int):
    """Fresh billing rows: one product with 3 metered prices, `count` subscriptions started
    a month and a bit ago at an instant off the hour (raw edges in every window)."""
    from django.db import connection
    from django.utils import timezone

    from billing import catalog, subscriptions
    from billing.catalog import PriceSpec
    from billing.models import Product
    from customers.models import Customer
    from metering.models import Meter

    with connection.cursor() as cursor:
        for sql in (
            "DELETE FROM billing_pendinginvoiceitem WHERE subscription_id IN "
            "(SELECT id FROM billing_subscription WHERE organization_id = %s)",
            "DELETE FROM billing_invoicedocument WHERE invoice_id IN "
            "(SELECT id FROM billing_invoice WHERE organization_id = %s)",
            "DELETE FROM billing_invoiceline WHERE invoice_id IN "
            "(SELECT id FROM billing_invoice WHERE organization_id = %s)",
            "DELETE FROM billing_invoice WHERE organization_id = %s",
            "DELETE FROM billing_invoicecounter WHERE organization_id = %s",
            "DELETE FROM billing_subscriptionprice WHERE subscription_id IN "
            "(SELECT id FROM billing_subscription WHERE organization_id = %s)",
            "DELETE FROM billing_subscription WHERE organization_id = %s",
            "DELETE FROM billing_price WHERE product_id IN "
            "(SELECT id FROM billing_product WHERE organization_id = %s)",
            "DELETE FROM billing_product WHERE organization_id = %s",
        ):
            cursor.execute(sql, [organization.pk])
    by_name = {m.name: m for m in Meter.objects.filter(organization=organization)}
    prices = [
        PriceSpec(amount_type="metered_unit", meter_id=by_name[name].pk, unit_amount=rate)
        for name, rate in (("API requests", 1), ("LLM tokens", "0.001"), ("Uploaded bytes", "0"))
    ]
    product = catalog.create_product(organization=organization, name="P5", prices=prices)
    product = Product.objects.get(pk=product.pk)
    started = timezone.now().replace(minute=17, second=0, microsecond=0) - timedelta(days=33)
    customers = list(Customer.objects.filter(organization=organization).order_by("id")[:count])
    for customer in tqdm(customers, desc="subscriptions", unit="sub"):
        subscriptions.create_subscription(customer=customer, product=product, started_at=started)
    return started


REFERENCE_SQL = """
SELECT customer_id, name, count(*), sum(CASE WHEN name = 'llm.completion'
       THEN (metadata ->> 'total_tokens')::numeric WHEN name = 'storage.upload'
       THEN (metadata ->> 'bytes')::numeric END)
FROM metering_event
WHERE organization_id = %s AND source = 'user' AND customer_id IS NOT NULL
  AND timestamp >= %s AND timestamp < %s
GROUP BY customer_id, name
"""


def reference_scan(organization, start, end) -> tuple[float, list]:
    from django.db import connection

    timings, rows = [], []
    for _ in range(2):  # the second run is the warm one
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(REFERENCE_SQL, [organization.pk, start, end])
            rows = cursor.fetchall()
        timings.append(time.perf_counter() - began)
    return min(timings), rows


def _close_share(ids: list, as_of) -> int:
    from billing import cycles

    closed = 0
    for start in range(0, len(ids), cycles.BATCH_SIZE):
        closed += cycles.close_batch(ids[start : start + cycles.BATCH_SIZE], as_of=as_of).closed
    return closed


def close_in_processes(workers: int, *, as_of) -> int:
    """What the beat's fan-out does with `workers` Celery processes: the due subscriptions in
    batches, each process closing its share (forked after closing this process's connection)."""
    from django.db import connections

    from billing import cycles

    ids = cycles.due_subscription_ids(as_of=as_of)
    shares = [ids[i::workers] for i in range(workers)]
    connections.close_all()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return sum(pool.starmap(_close_share, [(share, as_of) for share in shares]))


def run(args) -> dict:
    url = with_database(database_url(), args.database)
    ensure_database(url)
    # The close enqueues each invoice's PDF and email for the worker (a queue on Redis here,
    # purged first); run eagerly, they would be timed as part of the close.
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    bootstrap(url)
    from config.celery import app

    app.control.purge()
    from django.utils import timezone

    from billing import cycles
    from billing.models import Invoice, InvoiceLine
    from customers.models import Organization

    info = machine_info(url)
    print_machine(info)
    load(args)
    organization = Organization.objects.get(name=ORG)
    print(f"» subscribing {args.subscriptions} customers (3 metered prices each)…")
    started = reset_and_subscribe(organization, args.subscriptions)
    from billing.periods import period_bounds

    period = period_bounds(started, "month", 1, 0)
    scan_seconds, rows = reference_scan(organization, *period)
    sampler = RssSampler()
    sampler.start()
    began = time.perf_counter()
    if args.workers > 1:
        closed = close_in_processes(args.workers, as_of=timezone.now())
    else:
        closed = cycles.close_due(as_of=timezone.now()).closed
    close_seconds = time.perf_counter() - began
    samples = sampler.stop()
    # correctness spot check: API requests billed == the GROUP BY's counts
    expected = sum(count for _c, name, count, _s in rows if name == "api.request")
    billed = sum(
        line.consumed_units
        for line in InvoiceLine.objects.filter(
            invoice__organization=organization, meter__name="API requests"
        )
    )
    if args.workers > 1:
        samples = []  # the closing processes are the pool's, not this one
    quarter = max(1, len(samples) // 4)
    rss = [
        statistics.mean(samples[i : i + quarter]) / 1024 for i in range(0, len(samples), quarter)
    ]
    result = {
        "subscriptions": args.subscriptions,
        "workers": args.workers,
        "events_in_periods": sum(count for *_x, count, _s in rows),
        "invoices": closed,
        "invoices_stored": Invoice.objects.filter(organization=organization).count(),
        "close_seconds": round(close_seconds, 3),
        "scan_seconds": round(scan_seconds, 3),
        "ratio": round(close_seconds / scan_seconds, 2) if scan_seconds else None,
        "api_requests_billed": int(billed),
        "api_requests_scanned": expected,
        "rss_mib_quarters": [round(x, 1) for x in rss],
        "machine": info,
    }
    print(
        f"P5: closed {closed} periods in {close_seconds:.2f} s; one GROUP BY over the same "
        f"{result['events_in_periods']:,} events: {scan_seconds:.2f} s → {result['ratio']}× "
        f"(target ≤ 3×, ≤ 60 s at 10k)"
    )
    print(
        f"    billed API requests {int(billed):,} = scanned {expected:,}: {int(billed) == expected}"
    )
    print(f"P6 (worker RSS, MiB by quarter of the close): {result['rss_mib_quarters']}")
    save_result("p5_close", result)
    return result


def main(argv=None) -> dict:
    return run(parse_args(argv))
