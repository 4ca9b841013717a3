"""Auto top-up of credits, charged through the provider (localstripe): two batches ingested at
once by two threads both take the balance below the threshold, and both check it at once —
the pack is bought and charged exactly once, and its units land in the ledger."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from billing import catalog, packs, subscriptions
from billing.catalog import PriceSpec
from billing.models import AutoTopUp, BillingReason, CreditGrant, Invoice, InvoiceStatus
from customers.services import create_customer
from metering import customer_meters
from metering.ingest import ingest_events
from payments import methods
from payments.models import Payment, PaymentStatus, PaymentTrigger
from tests.factories import event_count_meter


@pytest.fixture
def setup(live_org_token, stripe_settings, eager_tasks):
    organization = live_org_token[0]
    meter = event_count_meter(organization)
    usage = catalog.create_product(
        organization=organization,
        name="Pay as you go",
        prices=[PriceSpec(amount_type="metered_unit", meter_id=meter.pk, unit_amount=Decimal(1))],
    )
    benefit = catalog.create_benefit(
        organization=organization,
        description="1,000 calls",
        meter_id=meter.pk,
        units=1000,
        rollover=False,
    )
    pack = catalog.create_product(
        organization=organization,
        name="1,000 calls",
        recurring_interval=None,
        prices=[PriceSpec(amount_type="fixed", price_amount=1000)],
        benefit_ids=[benefit.pk],
    )
    customer = create_customer(organization=organization, email="t@example.com", external_id="t")
    methods.set_default_method(customer, stripe_settings.card("4242424242424242"))
    subscriptions.create_subscription(
        customer=customer, product=usage, started_at=timezone.now() - timedelta(hours=1)
    )
    return organization, meter, pack, customer


def in_two_threads(work) -> list:
    """Run `work` in two threads at once; the exceptions they raised."""
    errors = []

    def worker():
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - the caller asserts there are none
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return errors


def batch(organization, n):
    at = (timezone.now() - timedelta(seconds=5)).isoformat()
    ingest_events(
        organization=organization,
        events=[
            {"name": "api.call", "external_customer_id": "t", "timestamp": at} for _ in range(n)
        ],
    )


def test_two_batches_crossing_together_buy_one_pack(setup):
    organization, meter, pack, customer = setup
    first = packs.buy(customer=customer, product=pack)  # charged at once (automatic collection)
    first.refresh_from_db()
    assert first.status == InvoiceStatus.PAID
    AutoTopUp.objects.create(customer=customer, meter=meter, pack=pack, threshold_units=200)

    barrier = threading.Barrier(2, timeout=60)

    def crossing():
        barrier.wait()
        batch(organization, 450)  # its ingest-time check runs on commit (eager task)
        barrier.wait()
        packs.check_top_ups([customer.pk])  # and both check again at the same moment

    assert in_two_threads(crossing) == []
    assert packs.check_top_ups([customer.pk]) == []  # nothing left to buy

    orders = Invoice.objects.filter(customer=customer, billing_reason=BillingReason.PURCHASE)
    top_up = orders.exclude(pk=first.pk).get()
    assert top_up.lines.get().label == "1,000 calls (auto top-up)"
    assert top_up.status == InvoiceStatus.PAID
    (payment,) = Payment.objects.filter(invoice=top_up)
    assert (payment.status, payment.amount, payment.trigger) == (
        PaymentStatus.SUCCEEDED,
        1000,
        PaymentTrigger.PURCHASE,
    )
    assert CreditGrant.objects.filter(customer=customer).count() == 2
    (_, numbers) = customer_meters.active_customer_meters(customer=customer)[0]
    assert (numbers.consumed_units, numbers.credited_units, numbers.balance) == (
        Decimal(900),
        2000,
        Decimal(1100),
    )


def test_a_second_check_waits_for_the_first_ones_purchase(setup, monkeypatch):
    """The row lock, not timing, makes it once: the first check holds its purchase open until
    the second one has read the balance (or 3 s went by). With the lock the second reads it only
    after the first's order is committed (units on the way); without it, before — and buys a
    second pack."""
    organization, meter, pack, customer = setup
    packs.buy(customer=customer, product=pack)
    batch(organization, 900)  # balance 100; no top-up rule yet, so nothing is bought
    AutoTopUp.objects.create(customer=customer, meter=meter, pack=pack, threshold_units=200)
    balances, other_checked = [], threading.Event()
    read_balance, buy = packs.balance_of, packs.buy

    def counted_balance(*args, **kwargs):
        balances.append(read_balance(*args, **kwargs))
        if len(balances) == 2:
            other_checked.set()
        return balances[-1]

    def held_buy(**kwargs):
        other_checked.wait(3)
        return buy(**kwargs)

    monkeypatch.setattr(packs, "balance_of", counted_balance)
    monkeypatch.setattr(packs, "buy", held_buy)
    assert in_two_threads(lambda: packs.check_top_ups([customer.pk])) == []
    assert len(balances) == 2  # both checked
    assert (
        Invoice.objects.filter(customer=customer, billing_reason=BillingReason.PURCHASE).count()
        == 2
    )
