"""Where a P3 customer-state read and a P4 quantities read spend their time: runs the services
in-process on the 10M dataset and times every SQL statement; `--explain` also prints
EXPLAIN (ANALYZE, BUFFERS) of the slowest statement of each.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/meterline_bench \\
        .venv/bin/python bench/profile_reads.py [--repeat 20] [--explain]
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--customer", default="gen_cust_000001")
    args = parser.parse_args(argv)
    common.bootstrap(common.database_url())
    from datetime import UTC, datetime, timedelta

    import psycopg
    from rest_framework.test import APIRequestFactory

    from customers.models import APIToken, Customer
    from customers.tokens import create_token
    from metering.api.meter_views import MeterQuantitiesView
    from metering.customer_meters import active_customer_meters
    from metering.models import Meter

    customer = Customer.objects.get(external_id=args.customer, organization__name="bench-data")
    meters = list(Meter.objects.filter(organization=customer.organization).order_by("name"))
    timings: dict[str, list[float]] = defaultdict(list)
    texts: dict[str, tuple[str, object]] = {}
    state = {"on": False, "label": ""}
    original = psycopg.Cursor.execute

    def timed(self, query, params=None, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, query, params, **kwargs)
        finally:
            if state["on"]:
                sql = query if isinstance(query, str) else str(query)
                key = state["label"] + " | " + re.sub(r"\s+", " ", sql).strip()[:90]
                timings[key].append((time.perf_counter() - start) * 1000)
                texts.setdefault(key, (sql, params))

    psycopg.Cursor.execute = timed
    api_token = APIToken.objects.filter(organization=customer.organization).first()
    if api_token is None:
        api_token, _ = create_token(organization_name=customer.organization.name, label="bench")
    factory = APIRequestFactory()
    now = datetime.now(UTC)
    start = (now - timedelta(days=90)).replace(hour=0, minute=0, second=0, microsecond=0)

    def quantities(meter):
        request = factory.get(
            f"/v1/meters/{meter.pk}/quantities",
            {
                "start_timestamp": f"{start:%Y-%m-%dT%H:%M:%SZ}",
                "end_timestamp": f"{now:%Y-%m-%dT%H:%M:%SZ}",
                "interval": "day",
                "customer_id": str(customer.pk),
            },
        )
        from rest_framework.test import force_authenticate

        force_authenticate(request, token=api_token)
        response = MeterQuantitiesView.as_view()(request, id=str(meter.pk))
        assert response.status_code == 200, response.data

    walls: dict[str, list[float]] = defaultdict(list)
    for round_ in range(args.repeat + 2):
        state["on"] = round_ >= 2
        state["label"] = "P3"
        t = time.perf_counter()
        active_customer_meters(customer=customer)
        if state["on"]:
            walls["P3 customer_active_meters"].append((time.perf_counter() - t) * 1000)
        for meter in meters:
            state["label"] = f"P4 {meter.aggregation['func']}"
            t = time.perf_counter()
            quantities(meter)
            if state["on"]:
                walls[f"P4 quantities ({meter.aggregation['func']})"].append(
                    (time.perf_counter() - t) * 1000
                )
    state["on"] = False
    for name, values in walls.items():
        print(f"{name}: {common.fmt_ms(common.percentiles(values))}")
    print("statements (mean ms per call, calls per read):")
    for key, values in sorted(timings.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {sum(values) / len(values):7.2f} ms x{len(values) // args.repeat:<3} {key}")
    if args.explain:
        from django.db import connection

        for label in ("P3", "P4 unique", "P4 sum"):
            keys = [k for k in timings if k.startswith(label + " ")]
            if not keys:
                continue
            slowest = max(keys, key=lambda k: sum(timings[k]) / len(timings[k]))
            sql, params = texts[slowest]
            print(f"\nEXPLAIN {slowest}")
            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                for (line,) in cursor.fetchall():
                    print("   ", line)


if __name__ == "__main__":
    main()
