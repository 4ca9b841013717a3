"""Real processes against the test database: two `close_cycles` at once, and a close killed
(SIGKILL) in the middle of its transaction."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from billing import catalog, subscriptions
from billing.models import Invoice, InvoiceCounter, Subscription
from customers.models import Customer
from tests.billing.conftest import at, fixed_price, unit_price
from tests.support import subprocess_database_url

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
AS_OF = "2024-06-01T02:00:00+00:00"


def close_cycles_process() -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "CONN_MAX_AGE": "0"}
    return subprocess.Popen(
        [sys.executable, "manage.py", "close_cycles", "--as-of", AS_OF],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def subscribed(org, product, count):
    return [
        subscriptions.create_subscription(
            customer=Customer.objects.create(organization=org, email=f"c{n}@example.com"),
            product=product,
            started_at=at("2024-01-01T00:00:00"),
        )
        for n in range(count)
    ]


def assert_gapless(org):
    sequences = list(
        Invoice.objects.filter(organization=org)
        .order_by("sequence")
        .values_list("sequence", flat=True)
    )
    assert sequences == list(range(1, len(sequences) + 1))
    assert InvoiceCounter.objects.get(organization=org).last_number == len(sequences)


def test_two_close_processes_at_once_produce_one_invoice_per_period(org, api_calls):
    product = catalog.create_product(
        organization=org, name="Plan", prices=[fixed_price(1000), unit_price(api_calls, 1)]
    )
    subs = subscribed(org, product, 12)
    first, second = close_cycles_process(), close_cycles_process()
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    for subscription in subs:
        periods = list(
            subscription.invoices.filter(billing_reason="subscription_cycle").values_list(
                "period_start", flat=True
            )
        )
        # Jan..May closed (June 1 00:00 + 1 h grace ≤ as-of), each exactly once
        assert sorted(p.month for p in periods) == [1, 2, 3, 4, 5]
    assert Invoice.objects.filter(organization=org).count() == 12 * 6
    assert_gapless(org)


def _wait_for_blocked_backend(timeout=60) -> int:
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%%pg_advisory_xact_lock_shared%%'"
            )
            row = cursor.fetchone()
            if row:
                return row[0]
            time.sleep(0.1)
    raise AssertionError("the close never reached the credit grant")


def _wait_gone(pid, timeout=60):
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
            if cursor.fetchone() is None:
                return
            time.sleep(0.1)
    raise AssertionError("the killed close's backend is still there")


def test_a_close_killed_mid_transaction_leaves_nothing_and_the_next_run_completes(org, api_calls):
    benefit = catalog.create_benefit(
        organization=org, description="credits", meter_id=api_calls.pk, units=10, rollover=False
    )
    product = catalog.create_product(
        organization=org, name="Plan", prices=[fixed_price(1000), unit_price(api_calls, 1)]
    )
    product.benefits.add(benefit)
    subs = subscribed(org, product, 3)
    before = Invoice.objects.filter(organization=org).count()
    assert before == 3
    # Hold the organization's rollup lock: the close blocks when granting the new period's
    # credits — after it wrote the invoice, its lines and the counter, before it commits.
    blocker = psycopg.connect(subprocess_database_url())
    blocker.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 7))", [str(org.pk)])
    process = close_cycles_process()
    try:
        backend = _wait_for_blocked_backend()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    _wait_gone(backend)
    assert process.returncode == -signal.SIGKILL
    assert Invoice.objects.filter(organization=org).count() == before
    assert InvoiceCounter.objects.get(organization=org).last_number == before
    assert all(
        s.current_period_start == at("2024-01-01T00:00:00")
        for s in Subscription.objects.filter(pk__in=[s.pk for s in subs])
    )
    rerun = close_cycles_process()
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert Invoice.objects.filter(organization=org).count() == before + 3 * 5
    assert_gapless(org)
