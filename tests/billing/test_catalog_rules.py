"""Catalog rules hold on every path, the API and the admin alike: a product's interval can't
change under live subscriptions, a price in use is replaced (never edited in place), a price
only uses its own organization's meters, and a redeemed discount's terms are frozen."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from billing import cycles, discounts, subscriptions
from billing.models import Discount, Price, Product
from metering import meters
from tests.billing.conftest import at, fixed_price, named, unit_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def subscribed(make_product, customer, api_calls):
    product = make_product(fixed_price(1000), unit_price(api_calls, 1), name="Pro")
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2026-11-01T00:00:00")
    )
    return product, subscription


def test_the_api_refuses_to_change_the_interval_of_a_product_in_use(api, subscribed, make_product):
    product, subscription = subscribed
    for body in ({"recurring_interval": "year"}, {"recurring_interval_count": 3}):
        response = api.patch(f"/v1/products/{product.pk}", body, format="json")
        assert response.status_code == 422, response.json()
        (problem,) = response.json()["detail"]
        assert problem["loc"] == ["body", *body]
        assert "subscription" in problem["msg"]
    product.refresh_from_db()
    assert (product.recurring_interval, product.recurring_interval_count) == ("month", 1)
    (invoice,) = cycles.close_due(as_of=at("2026-12-01T02:00:00")).invoices
    assert (invoice.period_start, invoice.period_end) == (
        at("2026-11-01T00:00:00"),
        at("2026-12-01T00:00:00"),
    )
    renewal = invoice.lines.get(meter__isnull=True)
    assert (renewal.period_start, renewal.period_end) == (
        at("2026-12-01T00:00:00"),
        at("2027-01-01T00:00:00"),
    )
    unused = make_product(fixed_price(1000), name="Unused")
    response = api.patch(f"/v1/products/{unused.pk}", {"recurring_interval": "year"}, format="json")
    assert response.status_code == 200 and response.json()["recurring_interval"] == "year"


def price_form(prefix, index, price, **changes):
    data = {
        "id": str(price.pk) if price else "",
        "product": str(price.product_id) if price else "",
        "amount_type": price.amount_type if price else "",
        "price_amount_0": str(price.price_amount.amount) if price and price.price_amount else "",
        "price_amount_1": "USD",
        "meter": str(price.meter_id) if price and price.meter_id else "",
        "unit_amount": str(price.unit_amount) if price and price.unit_amount is not None else "",
        "tiers": "",
        "cap_amount_0": "",
        "cap_amount_1": "USD",
    }
    data.update(changes)
    return {f"{prefix}-{index}-{key}": value for key, value in data.items()}


def product_post(product, forms):
    data = {
        "organization": str(product.organization_id),
        "name": product.name,
        "description": "",
        "recurring_interval": product.recurring_interval,
        "recurring_interval_count": str(product.recurring_interval_count),
        "trial_interval": "",
        "trial_interval_count": "",
        "currency": product.currency,
        "metadata": "{}",
        "prices-TOTAL_FORMS": str(len(forms)),
        "prices-INITIAL_FORMS": str(sum(1 for f in forms if f[f"prices-{forms.index(f)}-id"])),
        "prices-MIN_NUM_FORMS": "0",
        "prices-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for form in forms:
        data.update(form)
    return data


def test_the_admin_replaces_a_price_in_use_instead_of_editing_it(staff_client, subscribed, send):
    product, subscription = subscribed
    fixed, metered = product.prices.order_by("amount_type")
    url = reverse("admin:billing_product_change", args=[product.pk])
    forms = [
        price_form("prices", 0, fixed),
        price_form("prices", 1, metered, unit_amount="2"),
    ]
    response = staff_client.post(url, product_post(product, forms))
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    metered.refresh_from_db()
    assert (metered.unit_amount, metered.is_archived) == (1, True)  # untouched, archived
    (replacement,) = Price.objects.filter(product=product, amount_type="metered_unit", is_archived=False)
    assert replacement.unit_amount == 2
    # the live subscription keeps the price it was sold: 3 calls bill 3 ¢, not 6
    send("api.call", "ada", "2026-11-10T00:00:00", count=3)
    (invoice,) = cycles.close_due(as_of=at("2026-12-01T02:00:00")).invoices
    assert int(invoice.lines.get(meter__isnull=False).amount.amount * 100) == 3


def test_the_admin_refuses_another_organizations_meter(staff_client, subscribed, token_for):
    product, _ = subscribed
    other_org, _ = token_for("Other")
    foreign = meters.create_meter(
        organization=other_org, name="Theirs", filter=named("x"), aggregation={"func": "count"}
    )
    fixed, metered = product.prices.order_by("amount_type")
    forms = [
        price_form("prices", 0, fixed),
        price_form("prices", 1, metered),
        price_form("prices", 2, None, amount_type="metered_unit", meter=str(foreign.pk), unit_amount="1"),
    ]
    url = reverse("admin:billing_product_change", args=[product.pk])
    response = staff_client.post(url, product_post(product, forms))
    assert response.status_code == 200  # the form again, with the error
    assert "meter" in str(response.context["inline_admin_formsets"][0].formset.errors)
    assert not Price.objects.filter(meter=foreign).exists()


def test_the_admin_refuses_to_change_the_interval_of_a_product_in_use(staff_client, subscribed):
    product, _ = subscribed
    fixed, metered = product.prices.order_by("amount_type")
    data = product_post(product, [price_form("prices", 0, fixed), price_form("prices", 1, metered)])
    data["recurring_interval"] = "year"
    response = staff_client.post(reverse("admin:billing_product_change", args=[product.pk]), data)
    assert response.status_code == 200
    assert "recurring_interval" in response.context["adminform"].form.errors
    assert Product.objects.get(pk=product.pk).recurring_interval == "month"


def test_the_admin_freezes_a_redeemed_discounts_terms(staff_client, org, subscribed, customer):
    product, _ = subscribed
    discount = discounts.create_discount(
        organization=org, name="10%", type="percentage", basis_points=1000, duration="forever"
    )
    other = subscriptions.create_subscription(
        customer=type(customer).objects.create(organization=org, email="b@example.com"),
        product=product,
        discount=discount,
    )
    assert other.discount_id == discount.pk
    url = reverse("admin:billing_discount_change", args=[discount.pk])
    data = {
        "organization": str(org.pk),
        "name": "10%",
        "code": "",
        "type": "percentage",
        "basis_points": "5000",
        "amount_0": "",
        "amount_1": "USD",
        "duration": "forever",
        "duration_in_months": "",
        "max_redemptions": "",
        "metadata": "{}",
        "_save": "Save",
    }
    response = staff_client.post(url, data)
    assert response.status_code == 200, "a redeemed discount's terms must not save"
    assert Discount.objects.get(pk=discount.pk).basis_points == 1000
