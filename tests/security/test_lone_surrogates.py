"""A lone UTF-16 surrogate (`"\\ud800"`) in any string or key of any JSON body is a 422 naming the
field, and nothing is written: PostgreSQL text (UTF-8) cannot hold one, so before the JSON parser
refused it, every such body was a 500 from the database driver.

Each case is a valid body (the test sends it last and expects it to succeed, so each 422 is the
surrogate's doing); the surrogate is put into every string value and every object key of it in
turn. `{...}` placeholders are filled with the ids of the objects the fixture makes."""

import json

import pytest
from django.apps import apps

from billing import catalog
from billing.models import Product
from customers.models import Customer
from metering.models import Event, Meter
from tests.factories import event_count_meter

pytestmark = pytest.mark.django_db

SURROGATE = "\ud800"

CASES = {
    "events": (
        "POST",
        "/v1/events/ingest",
        {
            "events": [
                {
                    "name": "api.call",
                    "external_customer_id": "u1",
                    "external_id": "e1",
                    "timestamp": "2025-01-01T00:00:00Z",
                    "metadata": {"model": "gpt", "region": "eu"},
                }
            ]
        },
        "metering.Event",
    ),
    "customers": (
        "POST",
        "/v1/customers/",
        {
            "external_id": "c1",
            "email": "c1@example.com",
            "name": "Ada",
            "billing_name": "Ada Ltd",
            "tax_id": None,
            "metadata": {"plan": "pro"},
        },
        "customers.Customer",
    ),
    "customer update": (
        "PATCH",
        "/v1/customers/{customer_id}",
        {"name": "Grace", "metadata": {"team": "blue"}},
        "customers.Customer",
    ),
    "meters": (
        "POST",
        "/v1/meters/",
        {
            "name": "Tokens",
            "filter": {
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": "llm"}],
            },
            "aggregation": {"func": "sum", "property": "tokens"},
            "metadata": {"owner": "ml"},
        },
        "metering.Meter",
    ),
    "meter update": (
        "PATCH",
        "/v1/meters/{meter_id}",
        {"name": "Calls", "metadata": {"owner": "api"}},
        "metering.Meter",
    ),
    "products": (
        "POST",
        "/v1/products/",
        {
            "name": "Pro",
            "description": "For teams",
            "recurring_interval": "month",
            "metadata": {"tier": "pro"},
            "prices": [
                {"amount_type": "fixed", "price_amount": 2900},
                {"amount_type": "metered_unit", "meter_id": "{meter_id}", "unit_amount": "0.5"},
            ],
        },
        "billing.Product",
    ),
    "product update": (
        "PATCH",
        "/v1/products/{product_id}",
        {"name": "Team", "description": "Bigger", "metadata": {"tier": "team"}},
        "billing.Product",
    ),
    "discounts": (
        "POST",
        "/v1/discounts/",
        {
            "name": "$5 off",
            "amount": 500,
            "currency": "usd",
            "duration": "once",
            "code": "WELCOME",
            "metadata": {"campaign": "spring"},
        },
        "billing.Discount",
    ),
    "benefits": (
        "POST",
        "/v1/benefits/",
        {
            "type": "meter_credit",
            "description": "5 free calls",
            "properties": {"units": 5, "rollover": False, "meter_id": "{meter_id}"},
            "metadata": {"tier": "pro"},
        },
        "billing.Benefit",
    ),
    "tax rates": (
        "POST",
        "/v1/tax-rates/",
        {"name": "TVA", "country": "FR", "basis_points": 2000, "inclusive": False},
        "billing.TaxRate",
    ),
    "subscriptions": (
        "POST",
        "/v1/subscriptions/",
        {
            "product_id": "{product_id}",
            "external_customer_id": "{customer_external_id}",
            "metadata": {"source": "sales"},
        },
        "billing.Subscription",
    ),
    "customer sessions": (
        "POST",
        "/v1/customer-sessions/",
        {"external_customer_id": "{customer_external_id}", "return_url": "https://app.example/"},
        "portal.SignInToken",
    ),
    "webhook endpoints": (
        "POST",
        "/v1/webhooks/endpoints",
        {"url": "http://127.0.0.1:9/hook", "format": "raw", "events": ["customer.created"]},
        "webhooks.WebhookEndpoint",
    ),
}


def _mutations(value, path=()):
    """(loc, body) for the surrogate put into each string value and each object key in turn."""
    if isinstance(value, str):
        yield path, value + SURROGATE
    elif isinstance(value, dict):
        for key, child in value.items():
            renamed = {(k + SURROGATE if k == key else k): v for k, v in value.items()}
            yield (*path, key + "\\ud800"), renamed
            for loc, mutated in _mutations(child, (*path, key)):
                yield loc, {**value, key: mutated}
    elif isinstance(value, list):
        for index, child in enumerate(value):
            for loc, mutated in _mutations(child, (*path, index)):
                yield loc, [*value[:index], mutated, *value[index + 1 :]]


PARAMS = [
    pytest.param(name, loc, mutated, id=f"{name}:{'.'.join(map(str, loc))}")
    for name, (_, _, body, _) in CASES.items()
    for loc, mutated in _mutations(body)
]


@pytest.fixture
def ids(organization, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    customer = Customer.objects.create(
        organization=organization, external_id="known", email="known@example.com"
    )
    meter = event_count_meter(organization)
    product = catalog.create_product(
        organization=organization,
        name="Basic",
        recurring_interval="month",
        prices=[catalog.PriceSpec(amount_type="fixed", price_amount=900)],
    )
    return {
        "customer_id": str(customer.pk),
        "customer_external_id": customer.external_id,
        "meter_id": str(meter.pk),
        "product_id": str(product.pk),
    }


def _fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids) if value.startswith("{") and value.endswith("}") else value
    if isinstance(value, dict):
        return {key: _fill(child, ids) for key, child in value.items()}
    if isinstance(value, list):
        return [_fill(child, ids) for child in value]
    return value


def _send(api, method, path, body):
    # ensure_ascii keeps the lone surrogate as the \ud800 escape a client would send
    raw = json.dumps(body, ensure_ascii=True)
    return api.generic(method, path, raw, content_type="application/json")


def _snapshot(model_label):
    model = apps.get_model(model_label)
    return sorted(model.objects.values_list("pk", flat=True)), list(
        model.objects.order_by("pk").values()
    )


@pytest.mark.parametrize(("case", "loc", "body"), PARAMS)
def test_lone_surrogate_is_422_naming_the_field(api, ids, case, loc, body):
    method, path, valid, model_label = CASES[case]
    path = path.format(**ids)
    before = _snapshot(model_label)

    response = _send(api, method, path, _fill(body, ids))

    assert response.status_code == 422, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", *loc]
    assert problem["type"] == "string_unicode"
    assert "surrogate" in problem["msg"]
    assert _snapshot(model_label) == before
    if case == "events":
        assert Event.objects.count() == 0

    # the same body without the surrogate is accepted: the 422 was the surrogate's
    response = _send(api, method, path, _fill(valid, ids))
    assert response.status_code in (200, 201), response.content[:500]


def test_surrogate_pairs_are_text_and_stored(api, ids):
    """A correctly paired escape (an emoji) is ordinary text."""
    body = {"external_id": "emoji", "email": "e@example.com", "name": "Ada \ud83d\ude00"}
    response = _send(api, "POST", "/v1/customers/", body)
    assert response.status_code == 201, response.content
    assert Customer.objects.get(external_id="emoji").name == "Ada 😀"


def test_surrogate_in_a_batch_writes_no_event(api, ids):
    """One bad event among valid ones: the whole batch is refused, none stored."""
    events = [
        {"name": "api.call", "external_customer_id": "u1", "external_id": f"e{i}"}
        for i in range(50)
    ]
    events[37]["metadata"] = {"path": "/x" + SURROGATE}
    response = _send(api, "POST", "/v1/events/ingest", {"events": events})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events", 37, "metadata", "path"]
    assert Event.objects.count() == 0
    assert Meter.objects.count() == 1 and Product.objects.count() == 1
