"""One customer can't stop everyone's billing: a subscription whose amounts can't be computed or
stored is flagged with the reason and skipped, every other subscription is invoiced, and the
inputs that would overflow are refused at the door with a 422 naming the field."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from billing import catalog, cycles, subscriptions
from billing.models import Invoice, Subscription
from customers.models import Customer
from metering import meters
from metering.ingest import ingest_events
from tests.billing.conftest import at, fixed_price, named, unit_price

pytestmark = pytest.mark.django_db

HUGE = "9" * 39  # below the event number limit of 10^40, far beyond any invoice column


def metered_subscription(org, email, value, *, unit="1"):
    meter = meters.create_meter(
        organization=org,
        name=f"bytes {email}",
        filter=named(f"bytes.{email}"),
        aggregation={"func": "sum", "property": "n"},
    )
    product = catalog.create_product(
        organization=org, name=f"P {email}", prices=[fixed_price(100), unit_price(meter, unit)]
    )
    customer = Customer.objects.create(organization=org, email=email, external_id=email)
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    result = ingest_events(
        organization=org,
        events=[
            {
                "name": f"bytes.{email}",
                "external_customer_id": email,
                "timestamp": "2024-01-10T00:00:00Z",
                "metadata": {"n": value},
            }
        ],
    )
    assert result.inserted == 1
    return subscription


@pytest.fixture
def poisoned_and_healthy(org, token_for):
    other_org, _ = token_for("Other Org")
    poisoned = metered_subscription(org, "big@example.com", int(HUGE))
    healthy = metered_subscription(org, "ok@example.com", 7)
    elsewhere = metered_subscription(other_org, "else@example.com", 3)
    return poisoned, healthy, elsewhere


def cycle_totals(subscription):
    return [
        int(i.total.amount * 100)
        for i in subscription.invoices.filter(billing_reason="subscription_cycle").order_by(
            "period_start"
        )
    ]


def test_a_poisoned_subscription_is_flagged_and_every_other_one_is_invoiced(poisoned_and_healthy):
    poisoned, healthy, elsewhere = poisoned_and_healthy
    report = cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    assert cycle_totals(healthy) == [107, 100]
    assert cycle_totals(elsewhere) == [103, 100]
    assert cycle_totals(poisoned) == []
    poisoned.refresh_from_db()
    assert poisoned.current_period_start == at("2024-01-01T00:00:00")  # not advanced
    assert "out of range" in poisoned.billing_error
    assert report.flagged == [poisoned.pk]
    # the next run tries again, still flags it, and still bills everyone else
    cycles.close_due(as_of=at("2024-04-01T02:00:00"))
    assert cycle_totals(healthy) == [107, 100, 100]
    assert Subscription.objects.get(pk=poisoned.pk).billing_error


def test_revoking_a_poisoned_subscription_is_a_clear_422(api, poisoned_and_healthy):
    poisoned, _, _ = poisoned_and_healthy
    before = Invoice.objects.count()
    response = api.delete(f"/v1/subscriptions/{poisoned.pk}")
    assert response.status_code == 422, response.content
    assert "out of range" in response.json()["detail"][0]["msg"]
    assert Invoice.objects.count() == before
    assert Subscription.objects.get(pk=poisoned.pk).status == "active"


def test_the_admin_shows_why_a_subscription_is_flagged(poisoned_and_healthy):
    poisoned, _, _ = poisoned_and_healthy
    cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    listing = client.get(reverse("admin:billing_subscription_changelist") + "?flagged=yes")
    assert listing.status_code == 200
    assert str(poisoned.pk) in listing.content.decode()
    page = client.get(reverse("admin:billing_subscription_change", args=[poisoned.pk]))
    assert "out of range" in page.content.decode()


@pytest.mark.parametrize(
    ("price", "field"),
    [
        ({"amount_type": "fixed", "price_amount": 10**20}, "price_amount"),
        ({"amount_type": "fixed", "price_amount": 100_000_000}, "price_amount"),
        ({"amount_type": "metered_unit", "unit_amount": "1e400"}, "unit_amount"),
        ({"amount_type": "metered_unit", "unit_amount": "100000"}, "unit_amount"),
        ({"amount_type": "metered_unit", "unit_amount": "1", "cap_amount": 10**20}, "cap_amount"),
    ],
)
def test_out_of_range_price_inputs_are_422s_naming_the_field(api, api_calls, price, field):
    if price["amount_type"] != "fixed":
        price = {**price, "meter_id": str(api_calls.pk)}
    response = api.post(
        "/v1/products/",
        {"name": "Big", "recurring_interval": "month", "prices": [price]},
        format="json",
    )
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["body", "prices", 0, field]


def test_out_of_range_event_values_are_422s_naming_the_field(api):
    response = api.post(
        "/v1/events/ingest",
        {"events": [{"name": "x", "external_customer_id": "u", "metadata": {"n": 1e40}}]},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events", 0, "metadata", "n"]
