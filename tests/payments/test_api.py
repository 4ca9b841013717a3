"""The payments endpoints refuse bad input with a clear 4xx and write nothing, and the list
filters by order, customer and status within the organization."""

import pytest
from rest_framework.test import APIClient

from billing import catalog, subscriptions
from billing.catalog import PriceSpec
from customers.services import create_customer
from payments import collection, methods
from payments.models import BillingProfile, Payment

pytestmark = pytest.mark.django_db

GOOD, DECLINED, ATTACH_DECLINED = "4242424242424242", "4000000000000341", "4000000000000002"


@pytest.fixture
def customer(organization, stripe_settings):
    return create_customer(organization=organization, email="ann@example.com", external_id="ann")


def attach(api, customer_id, body):
    return api.post(f"/v1/customers/{customer_id}/payment-methods", body, format="json")


def test_attach_sets_the_default_method(api, customer, localstripe):
    response = attach(api, customer.pk, {"payment_method_id": localstripe.card(GOOD)})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["brand"], body["last4"], body["exp_month"], body["exp_year"]) == (
        "visa",
        "4242",
        12,
        2034,
    )
    assert body["customer_id"] == str(customer.pk) and body["retried_payments"] == []
    profile = BillingProfile.objects.get(customer=customer)
    assert profile.default_method_id == body["payment_method_id"]
    assert profile.provider_customer_id.startswith("cus_")


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({}, ["body", "payment_method_id"], "missing"),
        ({"payment_method_id": 42}, ["body", "payment_method_id"], None),
        ({"payment_method_id": ""}, ["body", "payment_method_id"], None),
        ({"payment_method_id": "pm with spaces"}, ["body", "payment_method_id"], None),
        ({"payment_method_id": "pm_" + "x" * 300}, ["body", "payment_method_id"], None),
        ({"payment_method_id": "pm_ok", "default": True}, ["body", "default"], "extra_forbidden"),
    ],
)
def test_bad_payloads_are_422(api, customer, body, loc, kind):
    response = attach(api, customer.pk, body)
    assert response.status_code == 422, response.content
    problem = response.json()["detail"][0]
    assert {tuple(p["loc"]) for p in response.json()["detail"]} == {tuple(loc)}
    if kind:
        assert problem["type"] == kind
    assert not BillingProfile.objects.exists()


def test_malformed_json_is_400(api, customer):
    response = api.post(
        f"/v1/customers/{customer.pk}/payment-methods", "{nope", content_type="application/json"
    )
    assert response.status_code == 400


def test_unknown_method_is_422_and_changes_nothing(api, customer, localstripe):
    attach(api, customer.pk, {"payment_method_id": localstripe.card(GOOD)})
    before = BillingProfile.objects.get(customer=customer)
    response = attach(api, customer.pk, {"payment_method_id": "pm_doesnotexist"})
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", "payment_method_id"]
    assert "No such payment method: 'pm_doesnotexist'" in problem["msg"]
    after = BillingProfile.objects.get(customer=customer)
    assert (after.default_method_id, after.last4) == (before.default_method_id, "4242")


def test_a_card_declined_on_attach_is_422(api, customer, localstripe):
    response = attach(api, customer.pk, {"payment_method_id": localstripe.card(ATTACH_DECLINED)})
    assert response.status_code == 422
    assert "declined" in response.json()["detail"][0]["msg"]
    assert BillingProfile.objects.get(customer=customer).default_method_id is None


def test_foreign_and_unknown_customers_are_404(api, token_for, stripe_settings, localstripe):
    other_org, _ = token_for("Other")
    foreign = create_customer(organization=other_org, email="eve@example.com")
    method = localstripe.card(GOOD)
    assert attach(api, foreign.pk, {"payment_method_id": method}).status_code == 404
    missing = "00000000-0000-0000-0000-000000000000"
    assert attach(api, missing, {"payment_method_id": method}).status_code == 404
    assert not BillingProfile.objects.exists()


def test_manual_collection_refuses_methods(api, organization, settings):
    settings.STRIPE_SECRET_KEY = ""
    customer = create_customer(organization=organization, email="man@example.com")
    response = attach(api, customer.pk, {"payment_method_id": "pm_x123"})
    assert response.status_code == 422
    assert "manually" in response.json()["detail"][0]["msg"]


@pytest.fixture
def collected(organization, stripe_settings, localstripe, token_for):
    """Two customers: one paid 2900, one declined 1234 (the payments of another organization
    exist too)."""
    plans = {
        amount: catalog.create_product(
            organization=organization,
            name=f"P{amount}",
            prices=[PriceSpec(amount_type="fixed", price_amount=amount)],
        )
        for amount in (2900, 1234)
    }
    made = {}
    for name, number, amount in (("paid", GOOD, 2900), ("declined", DECLINED, 1234)):
        customer = create_customer(organization=organization, email=f"{name}@example.com")
        methods.set_default_method(customer, localstripe.card(number))
        subscription = subscriptions.create_subscription(customer=customer, product=plans[amount])
        made[name] = (customer, subscription.invoices.get())
    other_org, _ = token_for("Other")
    other = create_customer(organization=other_org, email="o@example.com")
    methods.set_default_method(other, localstripe.card(GOOD))
    product = catalog.create_product(
        organization=other_org, name="O", prices=[PriceSpec(amount_type="fixed", price_amount=7)]
    )
    subscriptions.create_subscription(customer=other, product=product)
    report = collection.collect_due()
    assert (report.attempted, report.succeeded, report.failed) == (3, 2, 1)
    return made


def test_payments_list_and_filters(api, collected):
    ids = lambda response: sorted(p["amount"] for p in response.json()["items"])  # noqa: E731
    everything = api.get("/v1/payments/")
    assert everything.status_code == 200
    assert ids(everything) == [1234, 2900]
    assert everything.json()["pagination"] == {"total_count": 2, "max_page": 1}
    paid_customer, paid_invoice = collected["paid"]
    declined_customer, declined_invoice = collected["declined"]
    assert ids(api.get(f"/v1/payments/?order_id={paid_invoice.pk}")) == [2900]
    assert ids(api.get(f"/v1/payments/?customer_id={declined_customer.pk}")) == [1234]
    assert ids(api.get("/v1/payments/?status=failed")) == [1234]
    assert ids(api.get("/v1/payments/?status=succeeded&status=failed")) == [1234, 2900]
    assert ids(api.get("/v1/payments/?status=pending")) == []
    assert ids(api.get("/v1/payments/?sorting=amount")) == [1234, 2900]
    declined = api.get(f"/v1/payments/?order_id={declined_invoice.pk}").json()["items"][0]
    assert declined["status"] == "failed"
    assert (declined["decline_reason"], declined["decline_message"]) == (
        "card_declined",
        "Your card was declined.",
    )
    assert declined["method"] == "card" and declined["method_metadata"]["last4"] == "0341"
    detail = api.get(f"/v1/payments/{declined['id']}")
    assert detail.status_code == 200 and detail.json() == declined


@pytest.mark.parametrize(
    "query",
    ["status=refunded", "order_id=nope", "customer_id=1", "sorting=colour", "limit=0"],
)
def test_bad_filters_are_422(api, collected, query):
    response = api.get(f"/v1/payments/?{query}")
    assert response.status_code == 422, response.content


def test_other_organizations_payments_are_404(api, collected, token_for):
    foreign = Payment.objects.exclude(organization=collected["paid"][0].organization).get()
    assert api.get(f"/v1/payments/{foreign.pk}").status_code == 404
    assert api.get("/v1/payments/not-a-uuid").status_code == 404
    client = APIClient()
    assert client.get("/v1/payments/").status_code == 401
