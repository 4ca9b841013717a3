"""Spend thresholds on the wire: the extension fields on products and subscriptions (set over
plain HTTP, read back by the unchanged polar-sdk), the threshold invoice as a Polar order
(`subscription_meter_cycle`, Meterline's `invoice_reason`), and clear 422s for bad amounts."""

from datetime import UTC, datetime, timedelta

import pytest

from billing import thresholds
from billing.models import Product, Subscription
from metering import meters
from tests.billing.conftest import named, unit_price


def http(polar):
    return polar._client._client


@pytest.mark.django_db(transaction=True)
def test_thresholds_set_over_http_read_back_by_polar_sdk_and_invoiced_as_an_order(polar):
    meter = polar.meters.create(
        name="API calls", filter=named("api.call"), aggregation={"func": "count"}
    )
    created = http(polar).post(
        "/v1/products/",
        json={
            "name": "Usage",
            "recurring_interval": "month",
            "prices": [{"amount_type": "metered_unit", "meter_id": meter.id, "unit_amount": "1"}],
            "spend_threshold_amount": 5000,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["spend_threshold_amount"] == 5000
    product = polar.products.get(id=created.json()["id"])  # the client reads the extension
    assert product.name == "Usage"

    polar.customers.create(email="ada@example.com", external_id="ada")
    started = datetime.now(UTC) - timedelta(days=1)
    subscription = polar.subscriptions.create(
        product_id=product.id, external_customer_id="ada", started_at=started.isoformat()
    )
    path = f"/v1/subscriptions/{subscription.id}"
    assert http(polar).get(path).json()["spend_threshold_amount"] == 5000  # the product's
    patched = http(polar).patch(path, json={"spend_threshold_amount": 1000})
    assert patched.status_code == 200, patched.text
    assert patched.json()["spend_threshold_amount"] == 1000

    now = datetime.now(UTC)
    polar.events.ingest(
        events=[
            {
                "name": "api.call",
                "external_customer_id": "ada",
                "timestamp": (now - timedelta(seconds=i + 1)).isoformat(),
            }
            for i in range(1200)
        ]
    )
    (invoice,) = thresholds.check()  # what the task the ingest enqueued runs

    (order,) = polar.orders.list(subscription_id=subscription.id).items
    assert order.billing_reason == "subscription_meter_cycle"
    assert (order.total_amount, order.status) == (1200, "pending")
    (item,) = order.items
    assert item.amount == 1200
    raw = http(polar).get(f"/v1/orders/{order.id}").json()
    assert raw["invoice_reason"] == "spend_threshold"
    assert raw["invoice_number"] == invoice.number

    again = polar.subscriptions.get(id=subscription.id)
    (meter_line,) = again.meters
    assert (meter_line.consumed_units, meter_line.amount) == (1200, 1200)
    (raw_meter,) = http(polar).get(path).json()["meters"]
    assert raw_meter["invoiced_amount"] == 1200
    upcoming = http(polar).get(f"{path}/upcoming").json()
    assert upcoming["total_amount"] == 0  # nothing left to bill for the period so far

    cleared = http(polar).patch(path, json={"spend_threshold_amount": None})
    assert cleared.json()["spend_threshold_amount"] == 5000  # back to the product's


@pytest.mark.parametrize("amount", [0, -5, "ten", 1.5, 10**14])
def test_a_bad_threshold_is_a_422_naming_the_field_and_writes_nothing(api, org, amount):
    meter = meters.create_meter(
        organization=org, name="API calls", filter=named("api.call"), aggregation={"func": "count"}
    )
    response = api.post(
        "/v1/products/",
        {
            "name": "Usage",
            "recurring_interval": "month",
            "prices": [
                {"amount_type": "metered_unit", "meter_id": str(meter.pk), "unit_amount": "1"}
            ],
            "spend_threshold_amount": amount,
        },
        format="json",
    )
    assert response.status_code == 422, response.content
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "spend_threshold_amount"]
    assert not Product.objects.exists()


def test_a_subscription_threshold_update_refused_leaves_the_other_changes_undone(
    api, org, customer, make_product, api_calls
):
    subscription_product = make_product(unit_price(api_calls, 1))
    created = api.post(
        "/v1/subscriptions/",
        {"product_id": str(subscription_product.pk), "customer_id": str(customer.pk)},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["spend_threshold_amount"] is None
    path = f"/v1/subscriptions/{created.json()['id']}"
    response = api.patch(path, {"metadata": {"a": "b"}, "spend_threshold_amount": 0}, format="json")
    assert response.status_code == 422
    subscription = Subscription.objects.get()
    assert subscription.metadata == {} and subscription.spend_threshold is None
    ok = api.patch(path, {"spend_threshold_amount": 2500}, format="json")
    assert ok.status_code == 200 and ok.json()["spend_threshold_amount"] == 2500
