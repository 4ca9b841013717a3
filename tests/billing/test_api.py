"""Billing API details: tenant isolation, clear 422s naming the field, bounded query counts."""

import pytest
from rest_framework.test import APIClient

from billing import catalog, discounts, subscriptions, taxes
from billing.models import Invoice, Price, Product
from customers.models import Customer
from tests.billing.conftest import fixed_price, unit_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def intruder(token_for):
    _, secret = token_for("Intruder")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_every_billing_id_of_another_organization_is_404(org, intruder, customer, api_calls):
    benefit = catalog.create_benefit(
        organization=org, description="credits", meter_id=api_calls.pk, units=5, rollover=False
    )
    product = catalog.create_product(
        organization=org, name="P", prices=[fixed_price(100), unit_price(api_calls, 1)]
    )
    discount = discounts.create_discount(
        organization=org, name="d", type="percentage", basis_points=10, duration="once"
    )
    rate = taxes.create_tax_rate(
        organization=org, name="t", country="FR", state=None, basis_points=1, inclusive=False
    )
    subscription = subscriptions.create_subscription(customer=customer, product=product)
    invoice = Invoice.objects.get()
    gets = [
        f"/v1/products/{product.pk}",
        f"/v1/benefits/{benefit.pk}",
        f"/v1/discounts/{discount.pk}",
        f"/v1/tax-rates/{rate.pk}",
        f"/v1/subscriptions/{subscription.pk}",
        f"/v1/subscriptions/{subscription.pk}/upcoming",
        f"/v1/orders/{invoice.pk}",
        f"/v1/orders/{invoice.pk}/invoice",
    ]
    for path in gets:
        response = intruder.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "ResourceNotFound"
    for path in [gets[0], *gets[2:5]]:
        assert intruder.patch(path, {"name": "x"}, format="json").status_code == 404, path
    assert intruder.delete(f"/v1/subscriptions/{subscription.pk}").status_code == 404
    assert intruder.delete(f"/v1/discounts/{discount.pk}").status_code == 404
    for action in ("mark-paid", "void"):
        assert intruder.post(f"/v1/orders/{invoice.pk}/{action}").status_code == 404
    for listing in (
        "products/",
        "benefits/",
        "discounts/",
        "tax-rates/",
        "subscriptions/",
        "orders/",
    ):
        assert intruder.get(f"/v1/{listing}").json()["items"] == [], listing
    # the intruder cannot subscribe the victim's customer to the victim's product either
    response = intruder.post(
        "/v1/subscriptions/",
        {"product_id": str(product.pk), "customer_id": str(customer.pk)},
        format="json",
    )
    assert response.status_code == 422
    invoice.refresh_from_db()
    assert invoice.status == "open"


def test_bad_prices_are_422s_naming_the_field_and_write_nothing(api, api_calls, tokens):
    cases = [
        (
            {
                "amount_type": "metered_unit",
                "meter_id": str(api_calls.pk),
                "unit_amount": "0.0000000000001",
            },
            ["body", "prices", 0, "unit_amount"],
        ),
        (
            {"amount_type": "metered_unit", "meter_id": str(api_calls.pk), "unit_amount": "-1"},
            ["body", "prices", 0, "unit_amount"],
        ),
        (
            {
                "amount_type": "metered_tiers",
                "meter_id": str(api_calls.pk),
                "tiers": {"type": "graduated", "tiers": [{"bound": 10, "unit_amount": "1"}]},
            },
            ["body", "prices", 0, "tiers", "tiers", 0, "bound"],
        ),
        (
            {
                "amount_type": "metered_tiers",
                "meter_id": str(api_calls.pk),
                "tiers": {
                    "type": "volume",
                    "tiers": [
                        {"bound": 10, "unit_amount": "1"},
                        {"bound": 5, "unit_amount": "1"},
                        {"bound": None, "unit_amount": "1"},
                    ],
                },
            },
            ["body", "prices", 0, "tiers", "tiers", 1, "bound"],
        ),
        ({"amount_type": "fixed", "price_amount": 1.5}, ["body", "prices", 0, "price_amount"]),
        (
            {"amount_type": "fixed", "price_amount": 100, "price_currency": "zzz"},
            ["body", "prices", 0, "price_currency"],
        ),
        (
            {"amount_type": "metered_unit", "meter_id": "not-a-uuid", "unit_amount": 1},
            ["body", "prices", 0, "meter_id"],
        ),
        ({"amount_type": "seat_based"}, ["body", "prices", 0, "amount_type"]),
        ({"amount_type": "fixed", "price_amount": 1, "bogus": 1}, ["body", "prices", 0, "bogus"]),
    ]
    for price, loc in cases:
        response = api.post(
            "/v1/products/",
            {"name": "x", "recurring_interval": "month", "prices": [price]},
            format="json",
        )
        assert response.status_code == 422, (price, response.content)
        assert response.json()["detail"][0]["loc"] == loc, price
    twice = [{"amount_type": "metered_unit", "meter_id": str(api_calls.pk), "unit_amount": 1}] * 2
    response = api.post(
        "/v1/products/",
        {"name": "x", "recurring_interval": "month", "prices": twice},
        format="json",
    )
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == [
        "body",
        "prices",
        1,
        "meter_id",
    ]
    fixed_twice = [
        {"amount_type": "fixed", "price_amount": 1},
        {"amount_type": "fixed", "price_amount": 2},
    ]
    response = api.post(
        "/v1/products/",
        {"name": "x", "recurring_interval": "month", "prices": fixed_twice},
        format="json",
    )
    assert (
        response.status_code == 422
        and "at most one fixed price" in response.json()["detail"][0]["msg"]
    )
    assert not Product.objects.exists() and not Price.objects.exists()


def test_product_update_keeps_listed_prices_and_archives_the_rest(api, org, api_calls, tokens):
    created = api.post(
        "/v1/products/",
        {
            "name": "P",
            "recurring_interval": "month",
            "prices": [
                {"amount_type": "fixed", "price_amount": 500},
                {"amount_type": "metered_unit", "meter_id": str(api_calls.pk), "unit_amount": 2},
            ],
        },
        format="json",
    ).json()
    fixed_id = next(p["id"] for p in created["prices"] if p["amount_type"] == "fixed")
    updated = api.patch(
        f"/v1/products/{created['id']}",
        {
            "prices": [
                {"id": fixed_id},
                {"amount_type": "metered_unit", "meter_id": str(tokens.pk), "unit_amount": "0.25"},
            ]
        },
        format="json",
    ).json()
    assert sorted((p["amount_type"], p.get("unit_amount")) for p in updated["prices"]) == [
        ("fixed", None),
        ("metered_unit", "0.25"),
    ]
    assert Price.objects.filter(is_archived=True).count() == 1


def test_subscription_list_query_count_does_not_grow_with_the_page(
    api, org, api_calls, django_assert_max_num_queries
):
    product = catalog.create_product(
        organization=org, name="P", prices=[fixed_price(100), unit_price(api_calls, 1)]
    )
    for n in range(3):
        subscriptions.create_subscription(
            customer=Customer.objects.create(organization=org, email=f"x{n}@example.com"),
            product=product,
        )
    with django_assert_max_num_queries(30) as few:
        assert len(api.get("/v1/subscriptions/", {"limit": 100}).json()["items"]) == 3
    for n in range(3, 20):
        subscriptions.create_subscription(
            customer=Customer.objects.create(organization=org, email=f"x{n}@example.com"),
            product=product,
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(api.get("/v1/subscriptions/", {"limit": 100}).json()["items"]) == 20
    with django_assert_max_num_queries(20) as orders:
        api.get("/v1/orders/", {"limit": 100})
    assert len(orders.captured_queries) <= 20
