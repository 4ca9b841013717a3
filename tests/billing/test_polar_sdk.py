"""Billing scenarios with exact cents, driven through the unchanged polar-sdk client against a
live server: catalog, subscriptions (backdated), usage, cycle close, orders, customer state."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from billing import cycles

pytestmark = pytest.mark.django_db(transaction=True)

JAN = datetime(2024, 1, 1, tzinfo=UTC)


def subscribe_with_usage(polar, product_id, external_id, units, *, started=JAN):
    polar.customers.create(email=f"{external_id}@example.com", external_id=external_id)
    subscription = polar.subscriptions.create(
        product_id=product_id, external_customer_id=external_id, started_at=started.isoformat()
    )
    if units:
        polar.events.ingest(
            events=[
                {
                    "name": "api.call",
                    "external_customer_id": external_id,
                    "timestamp": (started + timedelta(days=3, seconds=i)).isoformat(),
                }
                for i in range(units)
            ]
        )
    return subscription


def close(at):
    cycles.close_due(as_of=at)


def cycle_order(polar, subscription_id):
    orders = polar.orders.list(subscription_id=subscription_id, limit=100).items
    (order,) = [o for o in orders if o.billing_reason == "subscription_cycle"]
    return order


LAGO_GRADUATED = {
    "type": "graduated",
    "tiers": [
        {"bound": 10, "unit_amount": "1000", "flat_amount": 200},
        {"bound": 20, "unit_amount": "500", "flat_amount": 300},
        {"bound": None, "unit_amount": "500", "flat_amount": 300},
    ],
}
VOLUME = {
    "type": "volume",
    "tiers": [
        {"bound": 100, "unit_amount": "200", "flat_amount": 1000},
        {"bound": 200, "unit_amount": "100"},
        {"bound": None, "unit_amount": 50, "flat_amount": 5000},
    ],
}


@pytest.mark.parametrize(
    ("tiers", "cases"),
    [
        (LAGO_GRADUATED, [(0, 200), (1, 1200), (10, 10200), (11, 11000), (21, 16300)]),
        (VOLUME, [(0, 1000), (100, 21000), (101, 10100), (300, 20000)]),
    ],
    ids=["graduated", "volume"],
)
def test_tiered_scenarios(polar, calls_meter, tiers, cases):
    product = polar.products.create(
        name=f"{tiers['type']} plan",
        recurring_interval="month",
        prices=[{"amount_type": "metered_tiers", "meter_id": calls_meter.id, "tiers": tiers}],
    )
    (price,) = product.prices
    assert price.amount_type == "metered_tiers" and price.tiers.type == tiers["type"]
    subs = [subscribe_with_usage(polar, product.id, f"{tiers['type']}{n}", n) for n, _ in cases]
    upcoming = [httpx_upcoming(polar, s.id)["total_amount"] for s in subs]
    assert upcoming == [cents for _, cents in cases]
    close(datetime(2024, 2, 1, 1, tzinfo=UTC))
    for subscription, (_units, cents) in zip(subs, cases, strict=True):
        order = cycle_order(polar, subscription.id)
        (item,) = order.items
        assert (item.amount, order.total_amount, order.status) == (cents, cents, "pending")
        assert item.product_price_id == price.id


def httpx_upcoming(polar, subscription_id) -> dict:
    """The upcoming invoice is a Meterline extension endpoint (no client method): plain HTTP."""
    response = polar._client._client.get(f"/v1/subscriptions/{subscription_id}/upcoming")
    assert response.status_code == 200, response.text
    return response.json()


def test_half_cent_unit_price_and_cap(polar, calls_meter):
    half = polar.products.create(
        name="half cent",
        recurring_interval="month",
        prices=[{"amount_type": "metered_unit", "meter_id": calls_meter.id, "unit_amount": "0.5"}],
    )
    capped = polar.products.create(
        name="capped",
        recurring_interval="month",
        prices=[
            {
                "amount_type": "metered_unit",
                "meter_id": calls_meter.id,
                "unit_amount": 25,
                "cap_amount": 100,
            }
        ],
    )
    assert (half.prices[0].unit_amount, capped.prices[0].cap_amount) == ("0.5", 100)
    a = subscribe_with_usage(polar, half.id, "half", 7)
    b = subscribe_with_usage(polar, capped.id, "capped", 7)
    close(datetime(2024, 2, 1, 1, tzinfo=UTC))
    assert cycle_order(polar, a.id).total_amount == 4
    assert cycle_order(polar, b.id).total_amount == 100  # 175 capped


@pytest.mark.parametrize(("rollover", "third_period_credits"), [(False, 100), (True, 150)])
def test_credits_and_rollover(polar, calls_meter, rollover, third_period_credits):
    benefit = polar.benefits.create(
        type="meter_credit",
        description="100 calls a month",
        properties={"units": 100, "rollover": rollover, "meter_id": calls_meter.id},
    )
    assert benefit.properties.units == 100
    product = polar.products.create(
        name="with credits",
        recurring_interval="month",
        prices=[{"amount_type": "metered_unit", "meter_id": calls_meter.id, "unit_amount": "1"}],
    )
    product = polar.products.update_benefits(product.id, benefits=[benefit.id])
    assert [b.id for b in product.benefits] == [benefit.id]
    subscription = subscribe_with_usage(polar, product.id, "credits", 250)
    state = polar.customers.get_state_external("credits")
    (meter,) = state.active_subscriptions[0].meters
    assert (meter.consumed_units, meter.credited_units, meter.amount) == (250, 100, 150)
    (active,) = [m for m in state.active_meters if m.meter_id == calls_meter.id]
    assert (active.consumed_units, active.credited_units, active.balance) == (250, 100, -150)
    assert [g.benefit_id for g in state.granted_benefits] == [benefit.id]
    close(datetime(2024, 2, 1, 1, tzinfo=UTC))
    order = cycle_order(polar, subscription.id)
    assert order.total_amount == 150
    # period 2 uses 50 of its 100 credits; period 3 starts with 100 (+50 with rollover)
    polar.events.ingest(
        events=[
            {
                "name": "api.call",
                "external_customer_id": "credits",
                "timestamp": "2024-02-10T00:00:00Z",
            }
        ]
        * 1
        + [
            {
                "name": "api.call",
                "external_customer_id": "credits",
                "timestamp": f"2024-02-11T00:00:{i:02d}Z",
            }
            for i in range(49)
        ]
    )
    close(datetime(2024, 3, 1, 1, tzinfo=UTC))
    got = polar.subscriptions.get(subscription.id)
    assert got.meters[0].credited_units == third_period_credits
    assert got.meters[0].consumed_units == 0


def test_anchor_days_and_backdated_periods(polar, calls_meter):
    product = polar.products.create(
        name="fixed monthly",
        recurring_interval="month",
        prices=[{"amount_type": "fixed", "price_amount": 2500, "price_currency": "usd"}],
    )
    polar.customers.create(email="anchor@example.com", external_id="anchor")
    subscription = polar.subscriptions.create(
        product_id=product.id,
        external_customer_id="anchor",
        started_at="2024-01-31T08:00:00Z",
    )
    assert subscription.current_period_end.startswith("2024-02-29T08:00:00")
    close(datetime(2024, 5, 1, tzinfo=UTC))
    orders = polar.orders.list(subscription_id=subscription.id, sorting=["created_at"], limit=10)
    items = [o.items[0] for o in sorted(orders.items, key=lambda o: o.invoice_number)]
    assert [(i.start_timestamp[:10], i.end_timestamp[:10]) for i in items] == [
        ("2024-01-31", "2024-02-29"),
        ("2024-02-29", "2024-03-31"),
        ("2024-03-31", "2024-04-30"),
        ("2024-04-30", "2024-05-31"),
    ]
    assert all(o.total_amount == 2500 for o in orders.items)
    numbers = sorted(o.invoice_number for o in orders.items)
    assert numbers == ["LIVEOR-0001", "LIVEOR-0002", "LIVEOR-0003", "LIVEOR-0004"]


def test_subscription_lifecycle_discount_tax_and_order_actions(
    polar, calls_meter, live_url, live_org_token
):
    headers = {"Authorization": f"Bearer {live_org_token[1]}"}
    rate = httpx.post(
        f"{live_url}/v1/tax-rates/",
        json={"name": "TVA", "country": "FR", "basis_points": 2000, "inclusive": False},
        headers=headers,
    )
    assert rate.status_code == 201, rate.text
    assert (
        httpx.get(f"{live_url}/v1/tax-rates/", headers=headers).json()["pagination"]["total_count"]
        == 1
    )
    discount = polar.discounts.create(
        name="10% forever", type="percentage", basis_points=1000, duration="forever"
    )
    product = polar.products.create(
        name="pro",
        recurring_interval="month",
        prices=[{"amount_type": "fixed", "price_amount": 1999}],
    )
    polar.customers.create(
        email="fr@example.com", external_id="fr", billing_address={"country": "FR"}
    )
    subscription = polar.subscriptions.create(
        product_id=product.id, external_customer_id="fr", discount_id=discount.id
    )
    assert subscription.discount.id == discount.id
    (order,) = polar.orders.list(subscription_id=subscription.id).items
    assert (
        order.subtotal_amount,
        order.discount_amount,
        order.net_amount,
        order.tax_amount,
        order.total_amount,
    ) == (
        1999,
        200,
        1799,
        360,
        2159,
    )
    assert order.billing_reason == "subscription_create" and order.items[0].tax_amount == 360
    paid = httpx.post(f"{live_url}/v1/orders/{order.id}/mark-paid", headers=headers)
    assert paid.status_code == 200 and paid.json()["status"] == "paid"
    again = httpx.post(f"{live_url}/v1/orders/{order.id}/void", headers=headers)
    assert again.status_code == 422 and again.json()["detail"][0]["msg"].startswith(
        "An invoice in status 'paid'"
    )
    assert polar.orders.get(order.id).paid is True
    updated = polar.subscriptions.update(subscription.id, cancel_at_period_end=True)
    assert updated.cancel_at_period_end and updated.ends_at == updated.current_period_end
    updated = polar.subscriptions.update(subscription.id, cancel_at_period_end=False)
    assert not updated.cancel_at_period_end
    revoked = polar.subscriptions.revoke(subscription.id)
    assert (revoked.status, revoked.ended_at is not None) == ("canceled", True)
    listed = polar.subscriptions.list(active=False)
    assert [s.id for s in listed.items] == [subscription.id]
    assert polar.customers.get_state_external("fr").active_subscriptions == []
    document = polar.orders.invoice(order.id)
    assert f"/v1/orders/{order.id}/invoice.pdf?token=" in document.url


def test_every_billing_list_reads_back_through_the_client(polar, calls_meter):
    benefit = polar.benefits.create(
        type="meter_credit",
        description="50 calls",
        properties={"units": 50, "rollover": True, "meter_id": calls_meter.id},
    )
    product = polar.products.create(
        name="lists",
        recurring_interval="month",
        recurring_interval_count=3,
        prices=[
            {"amount_type": "fixed", "price_amount": 900, "price_currency": "eur"},
            {
                "amount_type": "metered_tiers",
                "meter_id": calls_meter.id,
                "tiers": {"type": "volume", "tiers": [{"bound": None, "unit_amount": "0.75"}]},
                "cap_amount": 10_000,
            },
        ],
    )
    polar.products.update_benefits(product.id, benefits=[benefit.id])
    fixed = polar.discounts.create(
        name="5 off for 2",
        type="fixed",
        amount=500,
        currency="eur",
        duration="repeating",
        duration_in_months=2,
        code="FIVE-OFF",
        products=[product.id],
    )
    percent = polar.discounts.create(
        name="half once", type="percentage", basis_points=5000, duration="once"
    )
    subscription = subscribe_with_usage(polar, product.id, "lists", 4)
    polar.subscriptions.update(subscription.id, discount_id=fixed.id)
    assert [p.id for p in polar.products.list().items] == [product.id]
    assert polar.products.get(product.id).prices[1].tiers.tiers[0].unit_amount == "0.75"
    assert [b.id for b in polar.benefits.list().items] == [benefit.id]
    listed = {d.id: d for d in polar.discounts.list().items}
    # the client's union picks its first matching shape, so `duration_in_months` isn't exposed
    # on the object it builds for a repeating fixed discount; the wire carries it
    assert (listed[fixed.id].amount, listed[fixed.id].duration) == (500, "repeating")
    assert listed[percent.id].basis_points == 5000 and listed[fixed.id].redemptions_count == 1
    got = polar.subscriptions.get(subscription.id)
    assert (got.currency, got.amount, got.discount.id) == ("eur", 900, fixed.id)
    assert got.current_period_end.startswith("2024-04-01")  # every 3 months
    (meter,) = got.meters
    assert (meter.consumed_units, meter.credited_units, meter.amount) == (4, 50, 0)
    orders = polar.orders.list(customer_id=got.customer_id).items
    assert [(o.billing_reason, o.total_amount, o.currency) for o in orders] == [
        ("subscription_create", 900, "eur")
    ]
    state = polar.customers.get_state_external("lists")
    assert [s.id for s in state.active_subscriptions] == [subscription.id]
    assert [g.benefit_id for g in state.granted_benefits] == [benefit.id]
