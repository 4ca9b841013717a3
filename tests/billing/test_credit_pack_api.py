"""Credit packs over the API: `expires_after_days` on a meter-credit benefit (set over plain HTTP,
read back by the unchanged polar-sdk), `POST /v1/customers/{id}/credit-packs` returning the
pack's order (read by polar-sdk as Polar's `Order`), its units granted once paid with the
expiry, and clear 4xx with nothing written for bad input."""

from datetime import timedelta

import pytest

from billing.models import Benefit, CreditGrant, CreditSource, Invoice
from tests.billing.conftest import named


def http(polar):
    return polar._client._client


def benefit_body(meter_id, **properties):
    return {
        "type": "meter_credit",
        "description": "1,000 calls",
        "properties": {"units": 1000, "rollover": False, "meter_id": meter_id, **properties},
    }


@pytest.mark.django_db(transaction=True)
def test_a_pack_with_expiry_bought_through_the_api(polar):
    meter = polar.meters.create(
        name="API calls", filter=named("api.call"), aggregation={"func": "count"}
    )
    created = http(polar).post("/v1/benefits/", json=benefit_body(meter.id, expires_after_days=30))
    assert created.status_code == 201, created.text
    assert created.json()["properties"] == {
        "units": 1000,
        "rollover": False,
        "meter_id": meter.id,
        "expires_after_days": 30,
    }
    benefit = polar.benefits.get(id=created.json()["id"])  # the client skips the extra key
    assert (benefit.properties.units, benefit.properties.meter_id) == (1000, meter.id)
    assert Benefit.objects.get(pk=benefit.id).expires_after_days == 30

    pack = polar.products.create(
        name="1,000 calls", prices=[{"amount_type": "fixed", "price_amount": 1250}]
    )
    pack = polar.products.update_benefits(pack.id, benefits=[benefit.id])
    assert [b.id for b in pack.benefits] == [benefit.id]
    customer = polar.customers.create(email="ada@example.com", external_id="ada")

    bought = http(polar).post(
        f"/v1/customers/{customer.id}/credit-packs", json={"product_id": pack.id}
    )
    assert bought.status_code == 201, bought.text
    order = polar.orders.get(id=bought.json()["id"])
    assert (order.billing_reason, order.status, order.total_amount, order.subscription_id) == (
        "purchase",
        "pending",
        1250,
        None,
    )
    assert (order.product_id, order.customer_id) == (pack.id, customer.id)
    assert not CreditGrant.objects.exists()  # nothing before it is paid

    assert http(polar).post(f"/v1/orders/{order.id}/mark-paid").status_code == 200
    (grant,) = CreditGrant.objects.all()
    assert (grant.units, grant.source, str(grant.invoice_id)) == (1000, CreditSource.PACK, order.id)
    assert grant.expires_at - grant.granted_at == timedelta(days=30)
    meters = polar.customers.get_state(id=customer.id).active_meters
    assert meters == []  # no subscription prices the meter: nothing draws the ledger yet


@pytest.mark.django_db
def test_expires_after_days_is_checked(api, organization):
    from metering import meters

    meter = meters.create_meter(
        organization=organization,
        name="API calls",
        filter=named("api.call"),
        aggregation={"func": "count"},
    )
    for bad in (0, -1, 1.5, "soon", True, 36_501):
        response = api.post(
            "/v1/benefits/", benefit_body(str(meter.pk), expires_after_days=bad), format="json"
        )
        assert response.status_code == 422, (bad, response.content)
        assert response.json()["detail"][0]["loc"] == [
            "body",
            "properties",
            "expires_after_days",
        ], bad
    assert not Benefit.objects.exists()
    for days, stored in ((None, None), (36_500, 36_500)):
        response = api.post(
            "/v1/benefits/", benefit_body(str(meter.pk), expires_after_days=days), format="json"
        )
        assert response.status_code == 201, response.content
        assert response.json()["properties"]["expires_after_days"] == stored
    response = api.post("/v1/benefits/", benefit_body(str(meter.pk)), format="json")
    assert response.json()["properties"]["expires_after_days"] is None


@pytest.mark.django_db
def test_buying_refuses_what_is_not_a_pack(api, organization, token_for):
    from billing import catalog
    from billing.catalog import PriceSpec
    from customers.services import create_customer

    customer = create_customer(organization=organization, email="c@example.com", external_id="c")
    monthly = catalog.create_product(
        organization=organization,
        name="Monthly",
        recurring_interval="month",
        prices=[PriceSpec(amount_type="fixed", price_amount=1000)],
    )
    other_org, _ = token_for("Other")
    theirs = catalog.create_product(
        organization=other_org,
        name="Their pack",
        recurring_interval=None,
        prices=[PriceSpec(amount_type="fixed", price_amount=1000)],
    )
    stranger = create_customer(organization=other_org, email="s@example.com", external_id="s")
    url = f"/v1/customers/{customer.pk}/credit-packs"
    cases = [
        (url, {"product_id": str(monthly.pk)}, 422, ["body", "product_id"]),
        (url, {"product_id": str(theirs.pk)}, 422, ["body", "product_id"]),
        (url, {"product_id": "not-a-uuid"}, 422, ["body", "product_id"]),
        (url, {}, 422, ["body", "product_id"]),
        (url, {"product_id": str(monthly.pk), "quantity": 2}, 422, ["body", "quantity"]),
        (f"/v1/customers/{stranger.pk}/credit-packs", {"product_id": str(theirs.pk)}, 404, None),
    ]
    for path, body, code, loc in cases:
        response = api.post(path, body, format="json")
        assert response.status_code == code, (body, response.content)
        if loc is not None:
            assert loc in [error["loc"] for error in response.json()["detail"]], body
    assert not Invoice.objects.filter(billing_reason="purchase").exists()
