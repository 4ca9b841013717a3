"""DUNNING_GRACE_DAYS: a past_due subscription keeps its meter credits for the grace days; a
period starting later gets them only when the subscription recovers."""

import pytest

from billing import catalog, cycles, subscriptions
from billing.models import SubscriptionStatus
from metering import customer_meters
from tests.billing.conftest import at, unit_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscription(org, make_product, customer, api_calls, settings):
    settings.DUNNING_GRACE_DAYS = 7
    benefit = catalog.create_benefit(
        organization=org, description="100 calls", meter_id=api_calls.pk, units=100, rollover=False
    )
    product = make_product(unit_price(api_calls, 1))
    product.benefits.add(benefit)
    return subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )


def credited(api_calls, customer) -> int:
    return customer_meters.numbers_for(api_calls, customer).credited_units


def line(invoice):
    one = invoice.lines.get()
    return (one.consumed_units, one.credited_units, one.quantity)


def test_within_the_grace_the_next_period_is_credited(subscription, api_calls, customer, send):
    # past due 4 days before February starts: 4 < 7 days of grace
    subscriptions.set_past_due(subscription, at=at("2024-01-28T00:00:00"))
    send("api.call", "ada", "2024-01-10T00:00:00", count=250)
    (january,) = cycles.close_due(as_of=at("2024-02-01T01:00:00")).invoices
    assert line(january) == (250, 100, 150)
    subscription.refresh_from_db()
    assert (subscription.status, subscription.credits_withheld_for) == ("past_due", None)
    assert credited(api_calls, customer) == 100


def test_beyond_the_grace_credits_wait_for_the_recovery(subscription, api_calls, customer, send):
    subscriptions.set_past_due(subscription, at=at("2024-01-20T00:00:00"))
    subscription.refresh_from_db()
    assert subscription.past_due_at == at("2024-01-20T00:00:00")
    send("api.call", "ada", "2024-01-10T00:00:00", count=250)
    (january,) = cycles.close_due(as_of=at("2024-02-01T01:00:00")).invoices
    assert line(january) == (250, 100, 150)  # January's credits were granted before
    # February starts 12 days after the failure: its 100 credits are withheld
    subscription.refresh_from_db()
    assert subscription.credits_withheld_for == at("2024-02-01T00:00:00")
    assert credited(api_calls, customer) == 0

    send("api.call", "ada", "2024-02-10T00:00:00", count=150)
    subscriptions.set_recovered(subscription)
    subscription.refresh_from_db()
    assert (subscription.status, subscription.past_due_at, subscription.credits_withheld_for) == (
        SubscriptionStatus.ACTIVE,
        None,
        None,
    )
    assert credited(api_calls, customer) == 100
    # a second recovery (or a repeated signal) grants nothing more
    subscriptions.set_recovered(subscription)
    assert credited(api_calls, customer) == 100

    (february,) = cycles.close_due(as_of=at("2024-03-01T01:00:00")).invoices
    assert line(february) == (150, 100, 50)
    assert credited(api_calls, customer) == 100  # March: active again, credited at its start


def test_still_past_due_the_following_periods_get_no_credits(
    subscription, api_calls, customer, send
):
    subscriptions.set_past_due(subscription, at=at("2024-01-20T00:00:00"))
    cycles.close_due(as_of=at("2024-02-01T01:00:00"))
    send("api.call", "ada", "2024-02-10T00:00:00", count=30)
    (february,) = cycles.close_due(as_of=at("2024-03-01T01:00:00")).invoices
    assert line(february) == (30, 0, 30)
    subscription.refresh_from_db()
    assert subscription.credits_withheld_for == at("2024-03-01T00:00:00")
    assert credited(api_calls, customer) == 0
    # recovering grants March's credits only (February's period was billed without them)
    subscriptions.set_recovered(subscription)
    assert credited(api_calls, customer) == 100
