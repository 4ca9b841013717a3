"""Plan changes with proration, with exact cents, through the unchanged polar-sdk client against a
live server: $29 → $99 on a 30-day period, changed halfway through."""

from datetime import datetime, timedelta

import pytest
from polar.v2026_10.errors import HTTPValidationError

from billing import cycles

pytestmark = pytest.mark.django_db(transaction=True)

PERIOD = timedelta(days=30)


def plan(polar, name, cents, *, meter=None, unit_cents=None, **kwargs):
    prices = [{"amount_type": "fixed", "price_amount": cents, "price_currency": "usd"}]
    if meter is not None:
        prices.append(
            {"amount_type": "metered_unit", "meter_id": meter.id, "unit_amount": str(unit_cents)}
        )
    kwargs.setdefault("recurring_interval", "day")
    kwargs.setdefault("recurring_interval_count", 30)
    return polar.products.create(name=name, prices=prices, **kwargs)


def halfway_subscription(polar, product, external_id):
    """A subscription whose 30-day period started 15 days ago: a change now is at its middle
    (to within the request's own duration, far below the half cent the amounts round at)."""
    polar.customers.create(email=f"{external_id}@example.com", external_id=external_id)
    started = datetime.now().astimezone() - PERIOD / 2
    return polar.subscriptions.create(
        product_id=product.id, external_customer_id=external_id, started_at=started.isoformat()
    )


def orders(polar, subscription_id):
    found = polar.orders.list(subscription_id=subscription_id, limit=100).items
    return sorted(found, key=lambda order: order.invoice_number)


def close_period(subscription):
    end = datetime.fromisoformat(subscription.current_period_end)
    cycles.close_due(as_of=end + cycles.grace() + timedelta(seconds=1))


def test_prorate_credits_unused_time_and_charges_the_rest_on_the_next_invoice(polar):
    basic, pro = plan(polar, "Basic", 2900), plan(polar, "Pro", 9900)
    subscription = halfway_subscription(polar, basic, "pat")
    changed = polar.subscriptions.update(
        subscription.id, product_id=pro.id, proration_behavior="prorate"
    )
    assert changed.product_id == pro.id and changed.pending_update is None
    assert [price.id for price in changed.prices] == [pro.prices[0].id]
    # nothing is invoiced now: the creation invoice is still the only one
    assert [o.billing_reason for o in orders(polar, subscription.id)] == ["subscription_create"]

    close_period(changed)
    created, cycle = orders(polar, subscription.id)
    assert (created.total_amount, cycle.billing_reason) == (2900, "subscription_cycle")
    assert [(item.amount, item.proration) for item in cycle.items] == [
        (-1450, True),
        (4950, True),
        (9900, False),
    ]
    assert cycle.items[0].label.startswith("Unused time on Basic")
    assert cycle.items[1].label.startswith("Remaining time on Pro")
    assert cycle.items[0].product_price_id == basic.prices[0].id
    assert (cycle.subtotal_amount, cycle.total_amount) == (13400, 13400)


def test_invoice_behavior_invoices_the_proration_at_once(polar):
    basic, pro = plan(polar, "Basic", 2900), plan(polar, "Pro", 9900)
    subscription = halfway_subscription(polar, basic, "ivy")
    changed = polar.subscriptions.update(
        subscription.id, product_id=pro.id, proration_behavior="invoice"
    )
    created, update = orders(polar, subscription.id)
    assert update.billing_reason == "subscription_update"
    assert [(item.amount, item.proration) for item in update.items] == [(-1450, True), (4950, True)]
    assert (update.total_amount, update.status) == (3500, "pending")

    close_period(changed)
    *_, cycle = orders(polar, subscription.id)
    # the proration was invoiced already: the cycle bills the renewal only
    assert [(item.amount, item.proration) for item in cycle.items] == [(9900, False)]


def test_next_period_changes_nothing_until_the_period_ends(polar, live_url, live_org_token):
    basic, pro = plan(polar, "Basic", 2900), plan(polar, "Pro", 9900)
    subscription = halfway_subscription(polar, basic, "nat")
    changed = polar.subscriptions.update(
        subscription.id,
        product_id=pro.id,
        proration_behavior="next_period",
    )
    assert changed.product_id == basic.id
    assert changed.pending_update.product_id == pro.id
    assert changed.pending_update.applies_at == changed.current_period_end
    assert len(orders(polar, subscription.id)) == 1
    upcoming = polar._client._client.get(f"/v1/subscriptions/{subscription.id}/upcoming").json()
    assert [(item["label"][:3], item["amount"]) for item in upcoming["items"]] == [("Pro", 9900)]

    close_period(changed)
    _, cycle = orders(polar, subscription.id)
    assert [(item.amount, item.proration) for item in cycle.items] == [(9900, False)]
    assert cycle.items[0].product_price_id == pro.prices[0].id
    after = polar.subscriptions.get(subscription.id)
    assert (after.product_id, after.pending_update) == (pro.id, None)


def test_pending_change_can_be_dropped(polar):
    basic, pro = plan(polar, "Basic", 2900), plan(polar, "Pro", 9900)
    subscription = halfway_subscription(polar, basic, "dan")
    polar.subscriptions.update(
        subscription.id,
        product_id=pro.id,
        proration_behavior="next_period",
    )
    cleared = polar.subscriptions.update(subscription.id, pending_update=None)
    assert cleared.pending_update is None
    close_period(cleared)
    _, cycle = orders(polar, subscription.id)
    assert [item.amount for item in cycle.items] == [2900]


def test_usage_is_priced_by_the_prices_of_its_time(polar, calls_meter):
    """4 calls before the change at 10¢, 6 after it at 5¢: two lines, each over its own part
    of the period."""
    basic = plan(polar, "Basic", 2900, meter=calls_meter, unit_cents=10)
    pro = plan(polar, "Pro", 9900, meter=calls_meter, unit_cents=5)
    subscription = halfway_subscription(polar, basic, "uma")
    start = datetime.fromisoformat(subscription.current_period_start)
    polar.events.ingest(
        events=[
            {
                "name": "api.call",
                "external_customer_id": "uma",
                "timestamp": (start + timedelta(days=1, minutes=i)).isoformat(),
            }
            for i in range(4)
        ]
    )
    changed = polar.subscriptions.update(
        subscription.id, product_id=pro.id, proration_behavior="prorate"
    )
    polar.events.ingest(
        events=[{"name": "api.call", "external_customer_id": "uma"} for _ in range(6)]
    )
    (meter,) = polar.subscriptions.get(subscription.id).meters
    assert (meter.consumed_units, meter.amount) == (10, 40 + 30)

    close_period(changed)
    _, cycle = orders(polar, subscription.id)
    usage = [item for item in cycle.items if item.label.endswith("API calls")]
    assert [(item.label, item.amount) for item in usage] == [
        ("Basic — API calls", 40),
        ("Pro — API calls", 30),
    ]
    old, new = usage
    assert old.start_timestamp == changed.current_period_start
    assert old.end_timestamp == new.start_timestamp  # the instant of the change
    assert new.end_timestamp == changed.current_period_end
    assert start < datetime.fromisoformat(new.start_timestamp) < start + PERIOD


@pytest.mark.parametrize(
    ("other", "why"),
    [
        ({"recurring_interval": "month", "recurring_interval_count": 1}, "billing interval"),
        (
            {"prices": [{"amount_type": "fixed", "price_amount": 9900, "price_currency": "eur"}]},
            "currency",
        ),
    ],
    ids=["interval", "currency"],
)
def test_a_change_of_interval_or_currency_is_refused_with_the_reason(polar, other, why):
    basic = plan(polar, "Basic", 2900)
    kwargs = {"recurring_interval": "day", "recurring_interval_count": 30, **other}
    prices = kwargs.pop("prices", [{"amount_type": "fixed", "price_amount": 9900}])
    target = polar.products.create(name="Other", prices=prices, **kwargs)
    subscription = halfway_subscription(polar, basic, f"ref{why[:3]}")
    with pytest.raises(HTTPValidationError) as refused:
        polar.subscriptions.update(subscription.id, product_id=target.id)
    assert refused.value.status_code == 422
    assert why in refused.value.error.detail[0].msg
    after = polar.subscriptions.get(subscription.id)
    assert after.product_id == basic.id and len(orders(polar, subscription.id)) == 1
