"""Credit packs and the credit ledger, with exact numbers: packs bought and paid grant their
units, a close draws the period's usage earliest expiry first, an expired remainder is never
drawn, the customer meter's balance shows what is left, a one-time product can't be subscribed
to, and a void gives the draws back."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from moneyed import Money

from billing import catalog, credits, cycles, invoices, packs, subscriptions
from billing.catalog import PriceSpec
from billing.errors import BillingError
from billing.models import (
    BillingReason,
    CreditDraw,
    CreditGrant,
    CreditSource,
    Invoice,
    InvoiceStatus,
)
from customers.services import create_customer
from metering import customer_meters, meters
from metering.ingest import ingest_events
from tests.factories import event_count_meter

pytestmark = pytest.mark.django_db


@pytest.fixture
def meter(organization):
    return event_count_meter(organization)


@pytest.fixture
def customer(organization):
    return create_customer(organization=organization, email="c@example.com", external_id="c")


def pay_as_you_go(organization, meter):
    """1 ¢ a call, no fixed price."""
    return catalog.create_product(
        organization=organization,
        name="Pay as you go",
        prices=[PriceSpec(amount_type="metered_unit", meter_id=meter.pk, unit_amount=Decimal(1))],
    )


def pack(organization, meter, *, name, days):
    benefit = catalog.create_benefit(
        organization=organization,
        description=f"{name}: 1,000 calls",
        meter_id=meter.pk,
        units=1000,
        rollover=False,
    )
    benefit.expires_after_days = days
    benefit.save()
    return catalog.create_product(
        organization=organization,
        name=name,
        recurring_interval=None,
        prices=[PriceSpec(amount_type="fixed", price_amount=1000)],
        benefit_ids=[benefit.pk],
    )


def calls(organization, n, at):
    ingest_events(
        organization=organization,
        events=[
            {"name": "api.call", "external_customer_id": "c", "timestamp": at.isoformat()}
            for _ in range(n)
        ],
    )


def close(subscription):
    subscription.refresh_from_db()
    cycles.close_due(as_of=subscription.current_period_end + timedelta(hours=2))
    return Invoice.objects.get(
        subscription=subscription,
        billing_reason=BillingReason.SUBSCRIPTION_CYCLE,
        period_start=subscription.current_period_start,
    )


def drawn(invoice) -> dict:
    return {
        draw.grant.reason.split(" (")[0]: draw.units
        for draw in CreditDraw.objects.filter(invoice=invoice).select_related("grant")
    }


def test_two_packs_burn_the_earlier_expiry_first(organization, meter, customer):
    subscription = subscriptions.create_subscription(
        customer=customer,
        product=pay_as_you_go(organization, meter),
        started_at=timezone.now() - timedelta(hours=1),
    )
    late_pack = pack(organization, meter, name="Pack 90 days", days=90)
    early_pack = pack(organization, meter, name="Pack 30 days", days=30)
    # bought in this order: the one bought second expires first
    first = packs.buy(customer=customer, product=late_pack)
    second = packs.buy(customer=customer, product=early_pack)
    assert (first.billing_reason, first.subscription_id, first.total) == (
        BillingReason.PURCHASE,
        None,
        Money(10, "USD"),
    )
    assert not CreditGrant.objects.exists()  # nothing granted before payment
    invoices.mark_paid(first)
    invoices.mark_paid(second)
    grants = {g.reason.split(" (")[0]: g for g in CreditGrant.objects.all()}
    assert {name: (g.units, g.source) for name, g in grants.items()} == {
        "Pack 90 days": (1000, CreditSource.PACK),
        "Pack 30 days": (1000, CreditSource.PACK),
    }
    assert grants["Pack 30 days"].expires_at - grants["Pack 30 days"].granted_at == timedelta(
        days=30
    )
    # paying twice grants nothing more
    credits.grant_pack(Invoice.objects.get(pk=first.pk))
    assert CreditGrant.objects.count() == 2

    calls(organization, 1200, timezone.now() - timedelta(minutes=1))
    (cm, numbers) = customer_meters.active_customer_meters(customer=customer)[0]
    # the open period shows what its close will draw: 2,000 credited, 1,200 used, 800 left
    assert (numbers.consumed_units, numbers.credited_units, numbers.balance) == (
        Decimal(1200),
        2000,
        Decimal(800),
    )
    invoice = close(subscription)
    (line,) = invoice.lines.all()
    assert (line.consumed_units, line.credited_units, line.quantity, line.amount) == (
        Decimal(1200),
        1200,
        Decimal(0),
        Money(0, "USD"),
    )
    assert drawn(invoice) == {"Pack 30 days": 1000, "Pack 90 days": 200}

    # the next period: 900 calls, 800 left in the 90-day pack, 100 billed at 1 ¢
    subscription.refresh_from_db()
    # late usage of the closed period: the next period bills it
    calls(organization, 900, timezone.now() - timedelta(minutes=1))
    invoice = close(subscription)
    (line,) = invoice.lines.all()
    assert (line.credited_units, line.quantity, line.amount) == (800, Decimal(100), Money(1, "USD"))
    assert drawn(invoice) == {"Pack 90 days": 800}


def test_an_expired_remainder_is_never_drawn(organization, meter, customer):
    start = timezone.now() - timedelta(days=20)
    subscription = subscriptions.create_subscription(
        customer=customer, product=pay_as_you_go(organization, meter), started_at=start
    )
    credits.grant(
        customer=customer,
        meter=meter,
        units=1000,
        source=CreditSource.PACK,
        granted_at=start,
        expires_at=start + timedelta(days=10),
        reason="Short pack",
    )
    credits.grant(
        customer=customer, meter=meter, units=1000, granted_at=start, reason="Staff grant"
    )
    calls(organization, 300, start + timedelta(days=5))  # before the short pack expires
    calls(organization, 500, start + timedelta(days=15))  # after
    invoice = close(subscription)
    # the short pack covers only the usage before its expiry; its 700 left are never drawn
    assert drawn(invoice) == {"Short pack": 300, "Staff grant": 500}
    (line,) = invoice.lines.all()
    assert (line.credited_units, line.quantity, line.amount) == (800, Decimal(0), Money(0, "USD"))

    subscription.refresh_from_db()
    calls(organization, 800, timezone.now() - timedelta(minutes=1))
    (_, numbers) = customer_meters.active_customer_meters(customer=customer)[0]
    # 500 left in the staff grant; the short pack's 700 are gone
    assert (numbers.consumed_units, numbers.credited_units, numbers.balance) == (
        Decimal(800),
        500,
        Decimal(-300),
    )
    invoice = close(subscription)
    assert drawn(invoice) == {"Staff grant": 500}
    (line,) = invoice.lines.all()
    assert (line.quantity, line.amount) == (Decimal(300), Money(3, "USD"))
    short = CreditGrant.objects.get(reason="Short pack")
    assert sum(d.units for d in short.draws.all()) == 300


def test_subscription_credits_before_a_pack_with_the_same_reach(organization, meter, customer):
    """The subscription's own 100 credits expire with the period; a pack that does not expire
    is drawn only for what they leave, and rolls nothing into them."""
    benefit = catalog.create_benefit(
        organization=organization,
        description="100 calls a month",
        meter_id=meter.pk,
        units=100,
        rollover=True,
    )
    product = pay_as_you_go(organization, meter)
    catalog.set_benefits(product=product, benefit_ids=[benefit.pk])
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=timezone.now() - timedelta(hours=1)
    )
    credits.grant(customer=customer, meter=meter, units=1000, reason="Staff grant")
    calls(organization, 250, timezone.now() - timedelta(minutes=1))
    invoice = close(subscription)
    assert drawn(invoice) == {"Staff grant": 150}
    (line,) = invoice.lines.all()
    assert (line.credited_units, line.quantity) == (250, Decimal(0))
    # nothing of the subscription's credits was left: nothing rolls over
    subscription.refresh_from_db()
    (_, numbers) = customer_meters.active_customer_meters(customer=customer)[0]
    assert (numbers.credited_units, numbers.balance) == (100 + 850, Decimal(950))


def test_a_void_gives_the_draws_back(organization, meter, customer):
    subscription = subscriptions.create_subscription(
        customer=customer,
        product=pay_as_you_go(organization, meter),
        started_at=timezone.now() - timedelta(hours=1),
    )
    credits.grant(customer=customer, meter=meter, units=1000, reason="Staff grant")
    calls(organization, 400, timezone.now() - timedelta(minutes=1))
    invoice = close(subscription)
    assert drawn(invoice) == {"Staff grant": 400}
    invoices.void(invoice)
    (slice_,) = credits.remaining_grants([(customer.pk, meter.pk)])[customer.pk, meter.pk]
    assert slice_.remaining == 1000


def test_one_time_products_are_bought_not_subscribed(organization, meter, customer):
    product = pack(organization, meter, name="Pack", days=None)
    with pytest.raises(BillingError, match="one-time product"):
        subscriptions.create_subscription(customer=customer, product=product)
    with pytest.raises(BillingError, match="one-time products"):
        packs.buy(customer=customer, product=pay_as_you_go(organization, meter))
    order = packs.buy(customer=customer, product=product)
    assert order.status == InvoiceStatus.OPEN
    invoices.mark_paid(order)
    (grant,) = CreditGrant.objects.all()
    assert (grant.units, grant.expires_at, grant.invoice_id) == (1000, None, order.pk)


def test_credits_only_on_count_and_sum_meters(organization, customer):
    peak = meters.create_meter(
        organization=organization,
        name="Peak",
        filter={"conjunction": "and", "clauses": []},
        aggregation={"func": "max", "property": "metadata.n"},
    )
    with pytest.raises(BillingError, match="count and sum"):
        credits.grant(customer=customer, meter=peak, units=5)


def test_staff_grant_in_the_admin_and_the_customer_page(organization, meter, customer):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    response = client.post(
        reverse("admin:billing_creditgrant_add"),
        {"customer": customer.pk, "meter": meter.pk, "units": 250, "reason": "Goodwill"},
    )
    assert response.status_code == 302
    (grant,) = CreditGrant.objects.all()
    assert (grant.source, grant.units, grant.reason, grant.expires_at) == (
        CreditSource.STAFF,
        250,
        "Goodwill",
        None,
    )
    page = client.get(reverse("admin:billing_creditgrant_changelist")).content.decode()
    assert "250" in page
    page = client.get(reverse("admin:customers_customer_change", args=[customer.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Credits" in text and "Staff grant" in text and "never" in text
    # grants are history: no edit, no delete
    assert client.post(
        reverse("admin:billing_creditgrant_delete", args=[grant.pk])
    ).status_code in (
        302,
        403,
    )
    assert CreditGrant.objects.filter(pk=grant.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_one_time_product_through_polar_sdk(polar, live_org_token):
    """Polar's one-time product (`recurring_interval` null) is created and read back by
    polar-sdk; subscribing to it is a 422 naming the product."""
    from polar.v2026_10.errors import HTTPValidationError

    product = polar.products.create(
        name="1,000 calls", prices=[{"amount_type": "fixed", "price_amount": 1000}]
    )
    assert (product.recurring_interval, product.is_recurring) == (None, False)
    assert polar.products.get(id=product.id).recurring_interval is None
    customer = polar.customers.create(email="p@example.com", external_id="p")
    with pytest.raises(HTTPValidationError) as caught:
        polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    assert caught.value.status_code == 422
    assert "one-time product" in caught.value.error.detail[0].msg
