"""Where one P3 request (`GET /v1/customers/external/{id}/state`) spends its time, down to the
statement and the Python line: the whole request in-process through Django's WSGI handler (every
middleware, token auth, rate limit, view, serialization), production settings (DEBUG=0).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/meterline_bench_ref \\
        .venv/bin/python bench/profile_state.py [--customer gen_cust_000002] [--repeat 200]
        [--pyinstrument]

On a database without the organization `bench-data` (e.g. a fresh one) it creates it with the six
demo meters and gives the customer one event per meter, so its state lists six customer meters:
the shape P3 measures, independent of history (docs/performance.md, "P3").
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

ORG = "bench-data"


def prepare(customer_external_id: str) -> str:
    """The organization, customer, six meters and a token; returns the token's secret."""
    from customers.models import Customer, Organization
    from customers.tokens import create_token
    from metering.demo import ensure_demo_meters
    from metering.ingest import ingest_events
    from metering.models import CustomerMeter

    org, _ = Organization.objects.get_or_create(name=ORG)
    customer, _ = Customer.objects.get_or_create(
        organization=org,
        external_id=customer_external_id,
        defaults={"email": customer_external_id.replace("_", ".") + "@example.com"},
    )
    ensure_demo_meters(org)
    if not CustomerMeter.objects.filter(customer=customer).exists():
        ingest_events(
            organization=org,
            events=[
                {"name": "api.request", "external_customer_id": customer_external_id,
                 "metadata": {"latency_ms": 12}},
                {"name": "llm.completion", "external_customer_id": customer_external_id,
                 "metadata": {"model": "gpt-4o", "total_tokens": 100}},
                {"name": "storage.upload", "external_customer_id": customer_external_id,
                 "metadata": {"bytes": 1000}},
            ],
        )  # fmt: skip
    _, secret = create_token(organization_name=org.name, label="bench profile state")
    return secret


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customer", default="gen_cust_000002")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args(argv)
    url = common.database_url()
    common.ensure_database(url)
    common.bootstrap(url)
    from django.db import connection
    from django.test import Client

    secret = prepare(args.customer)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}", SERVER_NAME="localhost")
    path = f"/v1/customers/external/{args.customer}/state"
    timings: dict[str, list[float]] = defaultdict(list)
    state = {"on": False}

    def timed(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if state["on"]:
                key = re.sub(r"\s+", " ", sql).strip()[:110]
                timings[key].append((time.perf_counter() - start) * 1000)

    walls, cpus = [], []
    with connection.execute_wrapper(timed):
        for i in range(args.warmup + args.repeat):
            state["on"] = i >= args.warmup
            start, cpu = time.perf_counter(), time.process_time()
            response = client.get(path)
            if state["on"]:
                walls.append((time.perf_counter() - start) * 1000)
                cpus.append((time.process_time() - cpu) * 1000)
            assert response.status_code == 200, response.content[:300]
    body = response.json()
    print(f"{path}: {len(body['active_meters'])} active meters")
    print(f"request in-process: {common.fmt_ms(common.percentiles(walls))}")
    print(f"  of which this process's CPU: {common.fmt_ms(common.percentiles(cpus))}")
    sql_total = sum(sum(v) for v in timings.values()) / args.repeat
    print(f"SQL per request: {sql_total:.2f} ms in {sum(map(len, timings.values())) / args.repeat:.1f} statements")
    for key, values in sorted(timings.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {sum(values) / args.repeat:6.2f} ms x{len(values) / args.repeat:<4.1f} {key}")
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        with profiler:
            for _ in range(args.repeat):
                client.get(path)
        print(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    main()
