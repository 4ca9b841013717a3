"""Plan-change rules beyond the API scenarios, with exact cents: downgrades never pay out, tax
follows the proration, late usage of the old price, credits shared by old and new prices, trials,
and a change inside the close's grace."""

from datetime import timedelta
from decimal import Decimal

import pytest

from billing import catalog, cycles, plan_changes, subscriptions
from billing.errors import PlanChangeError
from billing.models import BillingReason, PendingInvoiceItem, TaxRate
from tests.billing.conftest import at, fixed_price, unit_price

pytestmark = pytest.mark.django_db

START = at("2024-04-01T00:00:00")  # 30-day periods: Apr 1 → May 1
HALFWAY = at("2024-04-16T00:00:00")
END = at("2024-05-01T00:00:00")


@pytest.fixture
def plans(org, make_product):
    def make(*prices, name, **kwargs):
        kwargs.setdefault("recurring_interval", "day")
        return make_product(*prices, name=name, **kwargs)

    return make


def thirty_days(make, name, cents, *more):
    return make(fixed_price(cents), *more, name=name, recurring_interval_count=30)


def close(as_of):
    return cycles.close_due(as_of=as_of).invoices


def amounts(invoice):
    return [
        (line.label.split(" (")[0], int(line.amount.amount * 100)) for line in invoice.lines.all()
    ]


def test_downgrade_with_invoice_pays_nothing_out_and_carries_the_excess(plans, customer):
    pro = thirty_days(plans, "Pro", 9900)
    basic = thirty_days(plans, "Basic", 2900)
    subscription = subscriptions.create_subscription(
        customer=customer, product=pro, started_at=START
    )
    plan_changes.change_product(subscription, basic, proration_behavior="invoice", at=HALFWAY)
    # the credit (−49.50) is larger than the charge (+14.50): no invoice now
    assert list(subscription.invoices.values_list("billing_reason", flat=True)) == [
        BillingReason.SUBSCRIPTION_CREATE
    ]
    (cycle,) = close(END + timedelta(hours=2))
    assert amounts(cycle) == [
        ("Unused time on Pro", -4350),
        ("Remaining time on Basic", 1450),
        ("Basic", 2900),
    ]
    assert (cycle.subtotal.amount, cycle.total.amount) == (Decimal("0.00"), Decimal("0.00"))
    assert cycle.lines.all()[0].label.endswith("(partly carried forward)")
    (carried,) = PendingInvoiceItem.objects.filter(invoice__isnull=True)
    assert (carried.amount.amount, carried.label) == (
        Decimal("-6.00"),
        f"Credit carried forward from {cycle.number}",
    )
    (next_cycle,) = close(END + timedelta(days=30, hours=2))
    assert amounts(next_cycle) == [
        ("Credit carried forward from " + cycle.number, -600),
        ("Basic", 2900),
    ]
    assert next_cycle.total.amount == Decimal("23.00")
    assert not PendingInvoiceItem.objects.filter(invoice__isnull=True).exists()


def test_exclusive_tax_follows_the_proration(org, plans, customer):
    TaxRate.objects.create(organization=org, name="VAT", country="FR", basis_points=2000)
    customer.billing_address = {"country": "FR"}
    customer.save()
    basic = thirty_days(plans, "Basic", 2900)
    pro = thirty_days(plans, "Pro", 9900)
    subscription = subscriptions.create_subscription(
        customer=customer, product=basic, started_at=START
    )
    plan_changes.change_product(subscription, pro, proration_behavior="invoice", at=HALFWAY)
    update = subscription.invoices.get(billing_reason=BillingReason.SUBSCRIPTION_UPDATE)
    # the credit takes back its tax: 20 % of the net 35.00
    assert [int(line.tax_amount.amount * 100) for line in update.lines.all()] == [-290, 990]
    assert (update.net.amount, update.tax.amount, update.total.amount) == (
        Decimal("35.00"),
        Decimal("7.00"),
        Decimal("42.00"),
    )


def test_late_usage_of_the_old_price_is_billed_at_the_old_price(plans, customer, api_calls, send):
    basic = thirty_days(plans, "Basic", 0, unit_price(api_calls, 10))
    pro = thirty_days(plans, "Pro", 0, unit_price(api_calls, 5))
    subscription = subscriptions.create_subscription(
        customer=customer, product=basic, started_at=START
    )
    send("api.call", "ada", "2024-04-10T00:00:00", count=2)
    plan_changes.change_product(subscription, pro, at=HALFWAY)
    send("api.call", "ada", "2024-04-20T00:00:00", count=3)
    (first,) = close(END + timedelta(hours=2))
    assert amounts(first) == [("Basic — API calls", 20), ("Pro — API calls", 15)]
    # after the close: 4 more calls from before the change, 1 from after it
    send("api.call", "ada", "2024-04-11T00:00:00", count=4)
    send("api.call", "ada", "2024-04-21T00:00:00", count=1)
    (second,) = close(END + timedelta(days=30, hours=2))
    assert amounts(second) == [("Basic — API calls", 40), ("Pro — API calls", 5)]
    old, new = second.lines.all()
    assert (old.late_units, new.late_units) == (4, 1)
    assert first.lines.all()[0].amount.amount == Decimal("0.20")  # finalized: unchanged


def test_a_meters_credits_go_to_its_prices_in_time_order(org, plans, customer, api_calls, send):
    benefit = catalog.create_benefit(
        organization=org, description="5 calls", meter_id=api_calls.pk, units=5, rollover=False
    )
    basic = thirty_days(plans, "Basic", 0, unit_price(api_calls, 10))
    pro = thirty_days(plans, "Pro", 0, unit_price(api_calls, 5))
    basic.benefits.add(benefit)
    subscription = subscriptions.create_subscription(
        customer=customer, product=basic, started_at=START
    )
    send("api.call", "ada", "2024-04-10T00:00:00", count=4)
    plan_changes.change_product(subscription, pro, at=HALFWAY)
    send("api.call", "ada", "2024-04-20T00:00:00", count=6)
    (meter,) = subscriptions.current_meters([cycles.live_subscriptions().get()])[subscription.pk]
    assert (meter.consumed, meter.credited, meter.amount) == (10, 5, 25)
    (cycle,) = close(END + timedelta(hours=2))
    # 4 calls at 10¢ all credited; the last credit covers 1 of 6 calls at 5¢
    assert amounts(cycle) == [("Basic — API calls", 0), ("Pro — API calls", 25)]
    assert [line.credited_units for line in cycle.lines.all()] == [5, 1]


def test_a_change_during_the_trial_prorates_nothing(plans, customer):
    basic = plans(
        fixed_price(2900),
        name="Basic",
        recurring_interval_count=30,
        trial_interval="day",
        trial_interval_count=10,
    )
    pro = plans(fixed_price(9900), name="Pro", recurring_interval_count=30)
    subscription = subscriptions.create_subscription(
        customer=customer, product=basic, started_at=START
    )
    plan_changes.change_product(
        subscription, pro, proration_behavior="invoice", at=START + timedelta(days=3)
    )
    assert not subscription.invoices.exists()
    assert not PendingInvoiceItem.objects.exists()
    (first,) = close(START + timedelta(days=10, hours=2))
    assert amounts(first) == [("Pro", 9900)]


def test_a_change_inside_the_grace_closes_the_ended_period_first(plans, customer):
    basic = thirty_days(plans, "Basic", 2900)
    pro = thirty_days(plans, "Pro", 9900)
    subscription = subscriptions.create_subscription(
        customer=customer, product=basic, started_at=START
    )
    changed = plan_changes.change_product(subscription, pro, at=END + timedelta(minutes=30))
    assert changed.current_period_start == END
    cycle = subscription.invoices.get(billing_reason=BillingReason.SUBSCRIPTION_CYCLE)
    assert amounts(cycle) == [("Basic", 2900)]  # the renewal, at the old price
    (next_cycle,) = close(END + timedelta(days=30, hours=2))
    credit, charge, renewal = amounts(next_cycle)
    # 30 minutes of the 30 days used: 29.00 × (43170 / 43200) = 28.98
    assert (credit, charge, renewal) == (
        ("Unused time on Basic", -2898),
        ("Remaining time on Pro", 9893),
        ("Pro", 9900),
    )


def test_refusals_change_nothing(org, plans, customer):
    basic = thirty_days(plans, "Basic", 2900)
    monthly = plans(fixed_price(9900), name="Monthly", recurring_interval="month")
    euros = plans(fixed_price(9900), name="Euro", recurring_interval_count=30, currency="EUR")
    subscription = subscriptions.create_subscription(
        customer=customer, product=basic, started_at=START
    )
    for target, why in [
        (basic, "already on this product"),
        (monthly, "billing interval"),
        (euros, "currency"),
    ]:
        with pytest.raises(PlanChangeError, match=why):
            plan_changes.change_product(subscription, target, at=HALFWAY)
    with pytest.raises(PlanChangeError, match="proration_behavior"):
        plan_changes.change_product(
            subscription, thirty_days(plans, "Pro", 9900), proration_behavior="reset", at=HALFWAY
        )
    subscription.refresh_from_db()
    assert subscription.product_id == basic.pk
    assert subscription.subscription_prices.get().ends_at is None
    assert not PendingInvoiceItem.objects.exists()


def test_prorated_is_exact_to_the_second():
    assert plan_changes.prorated(2900, START, START + timedelta(days=30), HALFWAY) == 1450
    assert plan_changes.prorated(9900, START, END, END - timedelta(seconds=1)) == 0  # 0.0038¢
    assert plan_changes.prorated(9900, START, END, END - timedelta(seconds=131)) == 1  # 0.5003¢
    assert plan_changes.prorated(9900, START, END, START) == 9900
    assert plan_changes.prorated(9900, START, END, START - timedelta(days=1)) == 9900


def test_two_changes_in_one_period_credit_what_each_charged(plans, customer):
    basic = thirty_days(plans, "Basic", 3000)
    pro = thirty_days(plans, "Pro", 6000)
    top = thirty_days(plans, "Max", 9000)
    subscription = subscriptions.create_subscription(
        customer=customer, product=basic, started_at=START
    )
    plan_changes.change_product(subscription, pro, at=START + timedelta(days=10))
    plan_changes.change_product(subscription, top, at=START + timedelta(days=20))
    (cycle,) = close(END + timedelta(hours=2))
    assert amounts(cycle) == [
        ("Unused time on Basic", -2000),  # 20 of 30 days of 30.00
        ("Remaining time on Pro", 4000),
        ("Unused time on Pro", -2000),  # the 10 days of Pro charged and not used
        ("Remaining time on Max", 3000),
        ("Max", 9000),
    ]


def test_changes_back_and_forth_at_one_instant_or_during_a_trial(plans, customer, send):
    """A price that leaves and comes back at the same instant (or twice during a trial, where
    every change takes effect at the trial's end) applies again; nothing is billed twice."""
    a = thirty_days(plans, "A", 1000)
    b = thirty_days(plans, "B", 3000)
    subscription = subscriptions.create_subscription(customer=customer, product=a, started_at=START)
    for product in (b, a, b, a):
        plan_changes.change_product(subscription, product, at=HALFWAY, proration_behavior="prorate")
    spans = subscription.subscription_prices.order_by("price__product__name", "starts_at")
    assert [(s.price.product.name, s.starts_at, s.ends_at) for s in spans] == [
        ("A", START, HALFWAY),
        ("A", HALFWAY, None),
        ("B", HALFWAY, HALFWAY),
    ]
    trial = plans(
        fixed_price(1000),
        name="Trial",
        recurring_interval_count=30,
        trial_interval="day",
        trial_interval_count=7,
    )
    other = subscriptions.create_subscription(
        customer=type(customer).objects.create(organization=customer.organization, email="t@x.io"),
        product=trial,
        started_at=START,
    )
    for product in (b, trial):
        plan_changes.change_product(other, product, at=START + timedelta(days=1))
    assert other.subscription_prices.filter(ends_at__isnull=True).get().price.product == trial
