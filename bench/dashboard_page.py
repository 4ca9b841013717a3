"""The admin billing dashboard on a big organization: page time, SQL time and statement count
(median of 5 warm renders), and the slowest statements of the last render.

    .venv/bin/python bench/run.py dashboard [--database meterline_bench_p5] [--org "P5 bench"]

Run it after `bench/run.py p5 --subscriptions 10000 --events 10000000`: that database holds
10,000 subscriptions, their invoices and 10M events.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import (
    bootstrap,
    database_url,
    machine_info,
    print_machine,
    save_result,
    with_database,
)


class StatementTimer:
    """A connection execute wrapper: the time and text of every statement of a render."""

    def __init__(self):
        self.statements: list[tuple[float, str]] = []

    def __call__(self, execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.statements.append((time.perf_counter() - began, sql))


def run(args) -> dict:
    url = with_database(database_url(), args.database)
    bootstrap(url)
    from django.conf import settings

    # the page's static links without running collectstatic (not what is measured)
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from customers.models import Organization

    info = machine_info(url)
    print_machine(info)
    organization = Organization.objects.get(name=args.org)
    user, _ = get_user_model().objects.get_or_create(
        username="bench-dashboard", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    path = f"/admin/billing/invoice/dashboard/?organization={organization.pk}"
    from django.core.cache import cache

    renders = []
    for attempt in range(args.repeat + 1):
        cache.clear()  # every render reads the usage chart (it is cached for 5 minutes)
        timer = StatementTimer()
        began = time.perf_counter()
        with connection.execute_wrapper(timer):
            response = client.get(path)
        elapsed = time.perf_counter() - began
        assert response.status_code == 200, response.status_code
        if attempt:  # the first render warms caches
            renders.append((elapsed, sum(t for t, _ in timer.statements), timer))
    began = time.perf_counter()
    client.get(path)  # the usage chart from the cache
    cached_ms = (time.perf_counter() - began) * 1000
    page = statistics.median(r[0] for r in renders) * 1000
    sql = statistics.median(r[1] for r in renders) * 1000
    last = renders[-1][2]
    slowest = sorted(last.statements, reverse=True)[:5]
    result = {
        "organization": args.org,
        "page_ms": round(page, 1),
        "page_cached_usage_ms": round(cached_ms, 1),
        "sql_ms": round(sql, 1),
        "statements": len(last.statements),
        "slowest": [(round(t * 1000, 1), " ".join(s.split())[:160]) for t, s in slowest],
        "machine": info,
    }
    print(
        f"dashboard of {args.org!r}: page {page:.0f} ms (median of {args.repeat}), SQL "
        f"{sql:.0f} ms in {len(last.statements)} statements; with the usage chart cached: "
        f"{cached_ms:.0f} ms"
    )
    for ms, text in result["slowest"]:
        print(f"  {ms:8.1f} ms  {text}")
    save_result("dashboard", result)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="meterline_bench_p5")
    parser.add_argument("--org", default="P5 bench")
    parser.add_argument("--repeat", type=int, default=5)
    return run(parser.parse_args(argv))
