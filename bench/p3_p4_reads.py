"""P3 customer state and P4 quantities on the 10M-event dataset, against an empty-table reference.

    .venv/bin/python bench/load_dataset.py          # once: 10M events, 6 meters (minutes)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/meterline_bench \\
        .venv/bin/python bench/p3_p4_reads.py [--requests 1000]

Two gunicorn servers (production settings, DEBUG=0, plus the Server-Timing middleware) run side
by side: one on the benchmark database (organization `bench-data`, 10M events, customer
`gen_cust_000001` with ~1M of them, the six demo meters), one on a reference database
(`<name>_ref`, created and migrated here) holding the same organization, customer and meters with
an **empty events table**. Requests are sequential from one client and alternate between the two
servers, so machine noise hits both alike. A second reference customer in the reference database
has one event per meter, so its state lists the same six customer meters (same response shape).

- P3: `GET /v1/customers/external/gen_cust_000001/state`
- P4: `GET /v1/meters/{id}/quantities`, the last 90 days at `day` interval for that customer,
  cycling through the six meters.

Server time is the `Server-Timing: app;dur=` header (time inside Django: middleware, view,
database); client time is the round trip over loopback including connection set-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

ORG = "bench-data"
CUSTOMER = "gen_cust_000001"
SHAPED_CUSTOMER = "gen_cust_000002"  # reference only: one event per meter


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per endpoint and database")
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--only", choices=("p3", "p4"))
    return parser.parse_args(argv)


SETUP_SCRIPT = """
import sys
from bench import common
common.bootstrap()
from customers.models import Customer, Organization
from customers.tokens import create_token
from metering.demo import ensure_demo_meters
from metering.models import Meter
org, _ = Organization.objects.get_or_create(name=sys.argv[1])
for external_id in sys.argv[2:]:
    Customer.objects.get_or_create(
        organization=org, external_id=external_id,
        defaults={"email": external_id.replace("_", ".") + "@example.com"})
ensure_demo_meters(org)
_, secret = create_token(organization_name=org.name, label="bench reads")
meters = ",".join(str(m) for m in Meter.objects.filter(organization=org).order_by("name")
                  .values_list("pk", flat=True))
customer = Customer.objects.get(organization=org, external_id=sys.argv[2]).pk
print(secret, meters, customer)
"""


def prepare(url: str, customers: list[str]) -> tuple[str, list[str], str]:
    """Token, meter ids (by name) and the customer's id in the database at `url` (in a
    subprocess, since this process can only configure Django for one database)."""
    import subprocess

    out = subprocess.run(
        [common.PYTHON, "-c", SETUP_SCRIPT, ORG, *customers],
        env=common.server_env(url),
        cwd=common.BASE_DIR,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    secret, meters, customer = out.stdout.strip().splitlines()[-1].split()
    return secret, meters.split(","), customer


def measure(paths_a, paths_b, client_a, client_b, *, requests: int, warmup: int):
    """Alternate A and B requests; returns (client ms, server ms) lists for each side."""
    results = {"a": ([], []), "b": ([], [])}
    for i in range(warmup + requests):
        for side, client, paths in (("a", client_a, paths_a), ("b", client_b, paths_b)):
            path = paths[i % len(paths)]
            start = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
            if i >= warmup:
                results[side][0].append(elapsed)
                results[side][1].append(common.server_ms(response))
    return results


def check_count(url: str, customer_id: str, meter_ids: list[str], state: dict) -> dict:
    """Cross-check: the count meter's consumed_units equals a COUNT over the raw events."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM metering_meter WHERE id = ANY(%s::uuid[]) "
            "AND aggregation->>'func' = 'count'",
            [meter_ids],
        ).fetchone()
        if not row:
            return {}
        count_meter = str(row[0])
        raw = conn.execute(
            "SELECT count(*) FROM metering_event WHERE customer_id = %s AND source = 'user' "
            "AND name = 'api.request'",
            [customer_id],
        ).fetchone()[0]
        events = conn.execute(
            "SELECT count(*) FROM metering_event WHERE customer_id = %s", [customer_id]
        ).fetchone()[0]
    shown = next(
        (m["consumed_units"] for m in state["active_meters"] if m["meter_id"] == count_meter),
        None,
    )
    return {"customer_events": events, "raw_count": raw, "state_count": shown}


def main(argv=None) -> dict:
    import httpx

    args = parse_args(argv)
    url = common.database_url()
    ref_url = common.with_database(url, urlsplit(url).path.lstrip("/") + "_ref")
    common.ensure_database(url)
    common.ensure_database(ref_url)
    info = common.machine_info(url)
    common.print_machine(info)

    token, meters, customer_id = prepare(url, [CUSTOMER])
    ref_token, ref_meters, ref_customer_id = prepare(ref_url, [CUSTOMER, SHAPED_CUSTOMER])
    if len(meters) != 6:
        print(f"warning: {len(meters)} meters in {ORG} (expected 6)")

    now = datetime.now(UTC)
    start = (now - timedelta(days=90)).replace(hour=0, minute=0, second=0, microsecond=0)

    def quantity_paths(meter_ids, customer):
        return [
            f"/v1/meters/{m}/quantities?start_timestamp={start:%Y-%m-%dT%H:%M:%SZ}"
            f"&end_timestamp={now:%Y-%m-%dT%H:%M:%SZ}&interval=day&customer_id={customer}"
            for m in meter_ids
        ]

    result = {"machine": info, "parameters": vars(args), "customer": CUSTOMER}
    with (
        common.Server(url=url, workers=1) as big,
        common.Server(url=ref_url, workers=1) as ref,
        httpx.Client(
            base_url=big.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as big_client,
        httpx.Client(
            base_url=ref.base_url, headers={"Authorization": f"Bearer {ref_token}"}, timeout=60
        ) as ref_client,
    ):
        state_path = f"/v1/customers/external/{CUSTOMER}/state"
        state = big_client.get(state_path).json()
        result["state_sample"] = state["active_meters"]
        result["check"] = check_count(url, customer_id, meters, state)
        print(
            f"dataset: {CUSTOMER} has {result['check'].get('customer_events', 0):,} events, "
            f"{len(state['active_meters'])} active meters; count meter shows "
            f"{result['check'].get('state_count')} vs raw COUNT {result['check'].get('raw_count')}"
        )
        if args.only in (None, "p3"):
            # make the shaped reference customer's six customer meters exist (one event each)
            ref_client.post(
                "/v1/events/ingest",
                json={
                    "events": [
                        {"name": "api.request", "external_customer_id": SHAPED_CUSTOMER,
                         "metadata": {"latency_ms": 12}},
                        {"name": "llm.completion", "external_customer_id": SHAPED_CUSTOMER,
                         "metadata": {"model": "gpt-4o", "total_tokens": 100}},
                        {"name": "storage.upload", "external_customer_id": SHAPED_CUSTOMER,
                         "metadata": {"bytes": 1000}},
                    ]
                },
            )  # fmt: skip
            runs = measure(
                [state_path],
                [state_path],
                big_client,
                ref_client,
                requests=args.requests,
                warmup=args.warmup,
            )
            shaped_path = f"/v1/customers/external/{SHAPED_CUSTOMER}/state"
            shaped = measure(
                [state_path],
                [shaped_path],
                big_client,
                ref_client,
                requests=args.requests // 2,
                warmup=args.warmup // 2,
            )
            result["p3"] = summarize("P3 customer state", runs, shaped, target_ms=15)
        if args.only in (None, "p4"):
            runs = measure(
                quantity_paths(meters, customer_id),
                quantity_paths(ref_meters, ref_customer_id),
                big_client,
                ref_client,
                requests=args.requests,
                warmup=args.warmup,
            )
            result["p4"] = summarize("P4 quantities 90 x day", runs, None, target_ms=50)
            per_meter = {}
            for index, meter in enumerate(meters):
                values = [v for k, v in enumerate(runs["a"][1]) if k % len(meters) == index]
                per_meter[meter] = common.percentiles(values)
            result["p4"]["per_meter_server_ms"] = per_meter
    common.save_result("p3_p4_reads", result)
    return result


def summarize(title: str, runs: dict, shaped: dict | None, *, target_ms: float) -> dict:
    big_client, big_server = (common.percentiles(v) for v in runs["a"])
    ref_client, ref_server = (common.percentiles(v) for v in runs["b"])
    ratio = big_server["p99"] / ref_server["p99"]
    print(f"{title} (10M events stored):")
    print(f"   server: {common.fmt_ms(big_server)}   target p99 <= {target_ms} ms")
    print(f"   client: {common.fmt_ms(big_client)}")
    print(f"   reference, empty events table: server {common.fmt_ms(ref_server)}")
    print(f"   ratio p99 server: {ratio:.2f} x empty (P3 target <= 1.5)")
    out = {
        "server_ms": big_server,
        "client_ms": big_client,
        "reference_empty_server_ms": ref_server,
        "reference_empty_client_ms": ref_client,
        "ratio_p99_server": round(ratio, 3),
        "target_p99_ms": target_ms,
        "met_absolute": big_server["p99"] <= target_ms,
    }
    if shaped:
        shaped_server = common.percentiles(shaped["b"][1])
        shaped_big = common.percentiles(shaped["a"][1])
        shaped_ratio = shaped_big["p99"] / shaped_server["p99"]
        print(
            f"   reference, near-empty table, same 6 customer meters: server "
            f"{common.fmt_ms(shaped_server)} -> ratio {shaped_ratio:.2f}"
        )
        out["reference_same_shape_server_ms"] = shaped_server
        out["ratio_p99_server_same_shape"] = round(shaped_ratio, 3)
    return out


if __name__ == "__main__":
    main()
