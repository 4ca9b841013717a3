"""Spend thresholds: the current period's metered charges not yet invoiced are invoiced as soon as
they reach the threshold, and the period's close bills only the rest — with exact cents, through
the real ingest path (the task the ingest enqueues), for a unit price, graduated tiers and a max
meter, and exactly once when two batches cross together."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from moneyed import Money

from billing import cycles, invoices, subscriptions, tasks, thresholds
from billing.catalog import PriceSpec
from billing.models import BillingReason, Invoice, InvoiceStatus, Subscription
from billing.money import to_minor
from customers.models import Customer
from metering import meters
from metering.ingest import ingest_events
from tests.billing.conftest import named, unit_price

USD = "USD"


def usd(cents: int) -> Money:
    return Money(Decimal(cents) / 100, USD)


@pytest.fixture
def checks(monkeypatch):
    """The threshold checks ingests enqueue on commit: (organization id, customer ids)."""
    calls = []
    monkeypatch.setattr(
        tasks.check_spend_thresholds, "delay_on_commit", lambda *args: calls.append(args)
    )
    return calls


class Usage:
    """Sends batches through `ingest_events` and runs the checks they enqueued, as a worker
    would."""

    def __init__(self, org, checks, name="api.call", customer="ada"):
        self.org, self.checks, self.name, self.customer = org, checks, name, customer
        self.sent = 0

    def send(self, count=1, **metadata) -> list[Invoice]:
        now = timezone.now()
        events = [
            {
                "name": self.name,
                "external_customer_id": self.customer,
                "timestamp": (now - timedelta(seconds=1)).isoformat(),
                "external_id": f"{self.customer}-{self.sent + i}",
                "metadata": metadata,
            }
            for i in range(count)
        ]
        self.sent += count
        before = len(threshold_invoices())
        assert ingest_events(organization=self.org, events=events).inserted == count
        while self.checks:
            tasks.check_spend_thresholds(*self.checks.pop(0))
        return threshold_invoices()[before:]


def threshold_invoices() -> list[Invoice]:
    return list(
        Invoice.objects.filter(billing_reason=BillingReason.SPEND_THRESHOLD).order_by("sequence")
    )


def close(subscription) -> Invoice:
    subscription.refresh_from_db()
    report = cycles.close_due(as_of=subscription.current_period_end + settings.BILLING_GRACE)
    (invoice,) = report.invoices
    return invoice


def subscribe(org, product, external_id="ada"):
    customer = Customer.objects.create(
        organization=org, email=f"{external_id}@example.com", external_id=external_id
    )
    return subscriptions.create_subscription(
        customer=customer, product=product, started_at=timezone.now() - timedelta(days=1)
    )


def metered_line(invoice):
    (line,) = [line for line in invoice.lines.all() if line.meter_id]
    return line


def test_a_50_dollar_threshold_invoices_5000_at_5000_units_5000_at_10000_and_2000_at_close(
    org, api_calls, make_product, checks
):
    product = make_product(unit_price(api_calls, 1), spend_threshold=usd(5000))
    subscription = subscribe(org, product)
    usage = Usage(org, checks)

    issued_at = {}
    for batch in range(1, 13):
        for invoice in usage.send(1000):
            issued_at[batch * 1000] = invoice
    assert sorted(issued_at) == [5000, 10000]
    for invoice in issued_at.values():
        assert invoice.billing_reason == BillingReason.SPEND_THRESHOLD
        assert invoice.status == InvoiceStatus.OPEN
        assert to_minor(invoice.total) == 5000
        assert invoice.period_start == subscription.current_period_start
        line = metered_line(invoice)
        assert (line.quantity, line.consumed_units, to_minor(line.amount)) == (5000, 5000, 5000)
        assert invoice.lines.count() == 1  # usage only: no fixed fee, no pending items

    # the upcoming invoice and the close bill only the rest; the meters show the whole period
    upcoming = subscriptions.upcoming_invoice(subscription)
    assert upcoming.total == 2000
    subscription.refresh_from_db()
    (meter,) = subscriptions.current_meters([subscription])[subscription.pk]
    assert (meter.consumed, meter.amount, meter.due_amount) == (12000, 12000, 2000)

    final = close(subscription)
    assert final.billing_reason == BillingReason.SUBSCRIPTION_CYCLE
    assert to_minor(final.total) == 2000
    line = metered_line(final)
    assert (line.quantity, line.consumed_units, to_minor(line.amount)) == (2000, 2000, 2000)
    assert "the rest after the spend-threshold invoices" in line.label
    # the close records every unit of the period as billed: nothing comes back as late usage
    (span,) = Subscription.objects.get(pk=subscription.pk).subscription_prices.all()
    assert span.billed_units == 12000
    assert subscriptions.upcoming_invoice(subscription).total == 0


def test_the_threshold_is_checked_for_the_ingested_customers_only_when_a_threshold_exists(
    org, api_calls, make_product, checks
):
    product = make_product(unit_price(api_calls, 1))
    subscription = subscribe(org, product)
    usage = Usage(org, checks)
    usage.send(10)
    assert checks == []  # the organization has no threshold: no task
    thresholds.set_subscription_threshold(subscription, usd(100))
    ingest_events(
        organization=org,
        events=[{"name": "api.call", "external_customer_id": "ada", "external_id": "x1"}],
    )
    customer_id = str(subscription.customer_id)
    assert checks == [(str(org.pk), [customer_id])]
    assert tasks.check_spend_thresholds(*checks.pop()) == 0  # 11 cents < $1
    usage.send(89)
    assert [to_minor(i.total) for i in threshold_invoices()] == [100]


GRADUATED = {
    "type": "graduated",
    "tiers": [
        {"bound": 1000, "unit_amount": "2", "flat_amount": 500},
        {"bound": None, "unit_amount": "1"},
    ],
}


def test_graduated_tiers_a_threshold_invoice_bills_the_marginal_amount_of_its_units(
    org, api_calls, make_product, checks
):
    """Amount(u) = 500 flat + 2 ¢ for the first 1,000 units + 1 ¢ beyond. A $30 threshold: at
    1,500 units the period is at 3000; at 4,500 units it is at 6000, and the 3,000 units since
    cost 3000 (1 ¢ each, tier 2, no second flat amount — 4500 if they were priced alone)."""
    product = make_product(
        PriceSpec(amount_type="metered_tiers", meter_id=api_calls.pk, tiers=GRADUATED),
        spend_threshold=usd(3000),
    )
    subscription = subscribe(org, product)
    usage = Usage(org, checks)
    issued = {}
    for units in range(500, 5001, 500):
        for invoice in usage.send(500):
            issued[units] = invoice
    assert sorted(issued) == [1500, 4500]
    first, second = metered_line(issued[1500]), metered_line(issued[4500])
    assert (first.quantity, to_minor(first.amount)) == (1500, 3000)
    assert (second.quantity, to_minor(second.amount)) == (3000, 3000)
    final = close(subscription)
    line = metered_line(final)
    assert (line.quantity, to_minor(line.amount)) == (500, 500)
    # the three invoices add up to the period priced whole: 500 + 2 × 1000 + 1 × 4000 = 6500
    billed = [*threshold_invoices(), final]
    assert sum(to_minor(invoice.total) for invoice in billed) == 6500


@pytest.fixture
def seats(org):
    return meters.create_meter(
        organization=org,
        name="Peak seats",
        filter=named("seats"),
        aggregation={"func": "max", "property": "seats"},
    )


def test_a_max_meter_bills_the_peak_so_far_and_the_close_bills_its_growth(
    org, seats, make_product, checks
):
    """A max meter's period value only grows: a threshold invoice bills the peak so far, the
    close the peak's growth beyond what was invoiced."""
    product = make_product(unit_price(seats, 100), spend_threshold=usd(5000))
    subscription = subscribe(org, product)
    usage = Usage(org, checks, name="seats")
    assert usage.send(seats=30) == []  # 3000
    (invoice,) = usage.send(seats=60)  # 6000 ≥ 5000
    line = metered_line(invoice)
    assert (line.quantity, line.consumed_units, to_minor(line.amount)) == (60, 60, 6000)
    assert usage.send(seats=40) == []  # the peak is still 60: nothing left
    assert usage.send(seats=80) == []  # 2000 more: under the threshold
    final = close(subscription)
    line = metered_line(final)
    assert (line.quantity, line.consumed_units, to_minor(line.amount)) == (20, 20, 2000)


def test_an_avg_meter_does_not_count_toward_the_threshold_and_is_billed_whole_at_close(
    org, make_product, checks
):
    """An average can fall: a threshold invoice could bill more than the period does."""
    latency = meters.create_meter(
        organization=org,
        name="Latency",
        filter=named("lat"),
        aggregation={"func": "avg", "property": "ms"},
    )
    product = make_product(unit_price(latency, 100), spend_threshold=usd(100))
    subscription = subscribe(org, product)
    usage = Usage(org, checks, name="lat")
    assert usage.send(ms=50) == [] and usage.send(ms=10) == []
    line = metered_line(close(subscription))
    assert (line.quantity, to_minor(line.amount)) == (30, 3000)


def test_a_subscription_threshold_overrides_the_product_default(
    org, api_calls, make_product, checks
):
    product = make_product(unit_price(api_calls, 1), spend_threshold=usd(5000))
    subscription = subscribe(org, product)
    thresholds.set_subscription_threshold(subscription, usd(1000))
    usage = Usage(org, checks)
    (invoice,) = usage.send(1000)
    assert to_minor(invoice.total) == 1000
    thresholds.set_subscription_threshold(subscription, None)  # back to the product's $50
    assert usage.send(4000) == []
    (invoice,) = usage.send(1000)
    assert to_minor(invoice.total) == 5000


def test_a_threshold_in_another_currency_is_refused(org, api_calls, make_product):
    from billing.errors import BillingError

    subscription = subscribe(org, make_product(unit_price(api_calls, 1)))
    with pytest.raises(BillingError, match="subscription's currency"):
        thresholds.set_subscription_threshold(subscription, Money(10, "EUR"))
    assert Subscription.objects.get(pk=subscription.pk).spend_threshold is None


def test_voiding_a_threshold_invoice_of_the_open_period_gives_its_usage_to_the_next_invoice(
    org, api_calls, make_product, checks
):
    product = make_product(unit_price(api_calls, 1), spend_threshold=usd(5000))
    subscription = subscribe(org, product)
    usage = Usage(org, checks)
    (invoice,) = usage.send(6000)
    invoices.void(invoice)
    assert Subscription.objects.get(pk=subscription.pk).threshold_version == 2
    # nothing was carried or unbilled: the void simply stops counting
    assert not subscription.pending_items.exists()
    assert subscriptions.upcoming_invoice(subscription).total == 6000
    # the next check invoices the 6,000 units again, once
    (again,) = usage.send(100)
    assert metered_line(again).quantity == 6100
    final = close(subscription)
    assert metered_line(final).quantity == 0 and to_minor(final.total) == 0


def test_voiding_a_threshold_invoice_after_its_period_closed_bills_its_units_as_late_usage(
    org, api_calls, make_product, checks
):
    product = make_product(unit_price(api_calls, 1), spend_threshold=usd(5000))
    subscription = subscribe(org, product)
    usage = Usage(org, checks)
    (invoice,) = usage.send(5000)
    usage.send(1000)
    assert to_minor(close(subscription).total) == 1000
    invoices.void(invoice)
    nxt = close(subscription)
    line = metered_line(nxt)
    assert (line.quantity, line.late_units, to_minor(line.amount)) == (5000, 5000, 5000)


def test_a_close_that_measured_before_a_threshold_invoice_measures_again(
    org, api_calls, make_product, checks
):
    """The batch close reads usage before it locks: a threshold invoice committed in between
    must not be billed twice."""
    product = make_product(unit_price(api_calls, 1), spend_threshold=usd(5000))
    subscription = subscribe(org, product)
    usage = Usage(org, checks)
    usage.send(4000)
    subscription = cycles.live_subscriptions().get(pk=subscription.pk)
    start, end = subscription.current_period_start, subscription.current_period_end
    read, usages, _ = cycles.measure([(subscription, start, end)])
    (invoice,) = usage.send(2000)  # 6000 invoiced after the close's read
    with pytest.raises(cycles.UsageChanged):
        cycles.close_period(
            subscription.pk, expected_start=start, usage=usages[subscription.pk], read=read
        )
    final = close(subscription)
    assert to_minor(invoice.total) == 6000 and to_minor(final.total) == 0


def test_a_revocation_nets_the_threshold_invoices(org, api_calls, make_product, checks):
    product = make_product(unit_price(api_calls, 1), spend_threshold=usd(5000))
    subscription = subscribe(org, product)
    usage = Usage(org, checks)
    usage.send(5500)
    usage.send(700)
    subscriptions.revoke(subscription)
    final = Invoice.objects.get(subscription=subscription, billing_reason="subscription_cycle")
    assert [to_minor(i.total) for i in threshold_invoices()] == [5500]
    assert to_minor(final.total) == 700


@pytest.mark.django_db(transaction=True)
def test_two_batches_crossing_together_make_one_invoice(live_org_token, monkeypatch):
    """4,000 units, then two batches of 1,000 from two threads: each alone would cross $50.
    Both checks find the crossing in their unlocked read and both go for the lock (a barrier
    makes sure they overlap): one invoice, for 6,000 units."""
    org = live_org_token[0]
    meter = meters.create_meter(
        organization=org, name="API calls", filter=named("api.call"), aggregation={"func": "count"}
    )
    from billing import catalog

    product = catalog.create_product(
        organization=org, name="Plan", prices=[unit_price(meter, 1)], spend_threshold=usd(5000)
    )
    subscription = subscribe(org, product)
    calls = []
    monkeypatch.setattr(
        tasks.check_spend_thresholds, "delay_on_commit", lambda *args: calls.append(args)
    )
    Usage(org, calls, customer="ada").send(4000)
    assert threshold_invoices() == []

    both_read = threading.Barrier(2, timeout=60)
    real = thresholds.issue_if_reached

    def after_both_read(subscription_id, **kwargs):
        both_read.wait()
        return real(subscription_id, **kwargs)

    monkeypatch.setattr(thresholds, "issue_if_reached", after_both_read)
    both_ingested = threading.Barrier(2, timeout=60)
    results, errors = [], []

    def batch(tag):
        try:
            events = [
                {"name": "api.call", "external_customer_id": "ada", "external_id": f"{tag}{i}"}
                for i in range(1000)
            ]
            assert ingest_events(organization=org, events=events).inserted == 1000
            both_ingested.wait()
            # the task each ingest enqueued (the same customer, so the same arguments)
            results.append(tasks.check_spend_thresholds(*calls[-1]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=batch, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(results) == [0, 1]
    (invoice,) = threshold_invoices()
    assert to_minor(invoice.total) == 6000 and metered_line(invoice).quantity == 6000
    final = close(subscription)
    assert to_minor(final.total) == 0


def test_staff_set_a_subscription_threshold_in_the_admin_through_the_service(
    org, api_calls, make_product, admin_client
):
    from django.urls import reverse

    subscription = subscribe(org, make_product(unit_price(api_calls, 1)))
    url = reverse("admin:billing_subscription_change", args=[subscription.pk])
    assert admin_client.get(url).status_code == 200

    def post(amount, currency):
        return admin_client.post(
            url,
            {"spend_threshold_0": amount, "spend_threshold_1": currency, "metadata": "{}"},
        )

    response = post("20.00", "EUR")
    assert response.status_code == 200  # the form again, with the refusal
    assert "subscription&#x27;s currency (USD)" in response.content.decode()
    assert post("-5", "USD").status_code == 200
    assert Subscription.objects.get(pk=subscription.pk).spend_threshold is None
    assert post("20.00", "USD").status_code == 302
    saved = Subscription.objects.get(pk=subscription.pk)
    assert saved.spend_threshold == usd(2000) and thresholds.threshold_of(saved) == usd(2000)


def test_staff_set_a_product_default_threshold_in_the_admin(
    org, api_calls, make_product, admin_client
):
    from django.urls import reverse

    product = make_product(unit_price(api_calls, 1))
    url = reverse("admin:billing_product_change", args=[product.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {
        **{name: value for name, value in form.initial.items() if value is not None},
        "spend_threshold_0": "50.00",
        "spend_threshold_1": "EUR",
    }
    refused = admin_client.post(url, data)
    assert "product&#x27;s currency (USD)" in refused.content.decode()
    product.refresh_from_db()
    assert product.spend_threshold is None
