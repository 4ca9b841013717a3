"""The billing responses in the served OpenAPI schema are described objects, and the bodies the
API sends match them exactly: every key the schema lists is sent, no key it does not list, each
with the documented type (checked on a realistic scenario, and by schemathesis' response
conformance check while it fuzzes the billing operations)."""

import copy
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft4Validator, FormatChecker
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from billing import cycles
from metering import meters
from tests.billing.conftest import named

BILLING_PATHS = r"^/v1/(products|benefits|discounts|subscriptions|orders|tax-rates)/"


def served_schema(client) -> dict:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return json.loads(response.content)


def with_meter_unions_relaxed(schema: dict) -> dict:
    """The `Meter` component (metering's, on a subscription's meters) documents its filter
    clauses and metadata values as `oneOf` unions whose branches overlap (an integer is also a
    number; a clause is also "an object"), so a strict validator rejects every meter with a
    clause. Until metering fixes that, its unions are read as `anyOf` here."""

    def relax(node):
        if isinstance(node, dict):
            if "oneOf" in node and "discriminator" not in node:
                node["anyOf"] = node.pop("oneOf")
            for value in node.values():
                relax(value)
        elif isinstance(node, list):
            for value in node:
                relax(value)

    schema = copy.deepcopy(schema)
    relax(schema["components"]["schemas"]["Meter"])
    return schema


def billing_operations(schema: dict):
    for path, operations in schema["paths"].items():
        if re.match(BILLING_PATHS, path):
            for method, operation in operations.items():
                yield path, method, operation


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def is_described(schema: dict, node: dict) -> bool:
    """A component with its properties listed, or a union of such components."""
    if "$ref" not in node:
        return False
    target = resolve(schema, node)
    if "oneOf" in target:
        return all(is_described(schema, kind) for kind in target["oneOf"])
    return target.get("type") == "object" and (
        bool(target.get("properties")) or target.get("additionalProperties") is False
    )


@pytest.mark.django_db
def test_every_billing_response_is_a_described_object(client):
    schema = served_schema(client)
    checked = []
    for path, method, operation in billing_operations(schema):
        for code, response in operation["responses"].items():
            if not code.startswith("2") or "content" not in response:
                continue
            for media_type, content in response["content"].items():
                if media_type != "application/json":
                    continue
                body = content["schema"]
                assert is_described(schema, body), (method, path, code, body)
                page = resolve(schema, body)
                if "pagination" in page.get("properties", {}):  # a page: its items are described
                    assert set(page["required"]) == {"items", "pagination"}, (method, path)
                    assert is_described(schema, page["properties"]["items"]["items"]), path
                checked.append((method, path, code))
    # every JSON 2xx of the 28 billing operations (the PDF download is binary, deletes are 204)
    assert len(checked) == 28, checked


# --- a realistic scenario ------------------------------------------------------------------------


def month_start(moment: datetime, months_back: int) -> datetime:
    year, month = moment.year, moment.month - months_back
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, tzinfo=UTC)


class Recorder:
    """An API client that keeps every response (the scenario's JSON bodies are checked)."""

    def __init__(self, client):
        self.client = client
        self.responses = []

    def __call__(self, method, path, body=None, *, expect, **query):
        if body is None:
            response = getattr(self.client, method)(path, query or None)
        else:
            response = getattr(self.client, method)(path, body, format="json")
        assert response.status_code == expect, (method, path, response.content[:1000])
        self.responses.append((method, path, response))
        if response.get("Content-Type", "").startswith("application/json"):
            return response.json()
        return None


def billing_scenario(api: Recorder, organization) -> None:
    """Every price kind, benefit, discount kind and tax rate kind; a subscription whose first
    closed cycle has usage, a repeating discount and tax, with usage in its current period (the
    upcoming invoice); a trial subscription with a fixed discount and a pending plan change;
    order actions, the invoice link, a revoked subscription."""
    calls = meters.create_meter(
        organization=organization,
        name="API calls",
        filter=named("api.call"),
        aggregation={"func": "count"},
    )
    tokens = meters.create_meter(
        organization=organization,
        name="Tokens",
        filter=named("llm"),
        aggregation={"func": "sum", "property": "tokens"},
        unit="token",
    )
    benefit = api(
        "post",
        "/v1/benefits/",
        {
            "type": "meter_credit",
            "description": "5 free calls",
            "properties": {"units": 5, "rollover": False, "meter_id": str(calls.pk)},
            "metadata": {"tier": "pro"},
        },
        expect=201,
    )
    pro = api(
        "post",
        "/v1/products/",
        {
            "name": "Pro",
            "description": "For teams",
            "recurring_interval": "month",
            "metadata": {"seats": 3, "beta": True},
            "prices": [
                {"amount_type": "fixed", "price_amount": 2900},
                {
                    "amount_type": "metered_unit",
                    "meter_id": str(calls.pk),
                    "unit_amount": "0.5",
                    "cap_amount": 100_000,
                },
                {
                    "amount_type": "metered_tiers",
                    "meter_id": str(tokens.pk),
                    "tiers": {
                        "type": "graduated",
                        "tiers": [
                            {"bound": 1000, "unit_amount": "0.01", "flat_amount": 100},
                            {"bound": None, "unit_amount": "0.005"},
                        ],
                    },
                },
            ],
        },
        expect=201,
    )
    assert [p["amount_type"] for p in pro["prices"]] == ["fixed", "metered_unit", "metered_tiers"]
    api("post", f"/v1/products/{pro['id']}/benefits", {"benefits": [benefit["id"]]}, expect=200)
    basic = api(
        "post",
        "/v1/products/",
        {
            "name": "Basic",
            "recurring_interval": "month",
            "trial_interval": "day",
            "trial_interval_count": 7,
            "prices": [{"amount_type": "fixed", "price_amount": 900}],
        },
        expect=201,
    )
    fixed_id = basic["prices"][0]["id"]
    api(
        "patch",
        f"/v1/products/{basic['id']}",
        {
            "description": "Starter",
            "prices": [
                {"id": fixed_id},
                {"amount_type": "metered_unit", "meter_id": str(calls.pk), "unit_amount": "1"},
            ],
        },
        expect=200,
    )
    api("patch", f"/v1/products/{basic['id']}", {"prices": [{"id": fixed_id}]}, expect=200)
    repeating = api(
        "post",
        "/v1/discounts/",
        {
            "name": "10% for 3 months",
            "type": "percentage",
            "basis_points": 1000,
            "duration": "repeating",
            "duration_in_months": 3,
            "products": [pro["id"]],
        },
        expect=201,
    )
    welcome = api(
        "post",
        "/v1/discounts/",
        {
            "name": "$5 off",
            "amount": 500,
            "currency": "usd",
            "duration": "once",
            "code": "WELCOME",
            "max_redemptions": 10,
        },
        expect=201,
    )
    api(
        "post",
        "/v1/discounts/",
        {"name": "quarter", "basis_points": 2500, "duration": "forever"},
        expect=201,
    )
    api(
        "post",
        "/v1/discounts/",
        {
            "name": "$1 for 2 months",
            "amount": 100,
            "currency": "usd",
            "duration": "repeating",
            "duration_in_months": 2,
            "starts_at": "2024-06-01T00:00:00Z",
        },
        expect=201,
    )
    api("patch", f"/v1/discounts/{welcome['id']}", {"name": "Welcome $5"}, expect=200)
    api(
        "post",
        "/v1/tax-rates/",
        {"name": "TVA", "country": "FR", "basis_points": 2000, "inclusive": False},
        expect=201,
    )
    inclusive = api(
        "post",
        "/v1/tax-rates/",
        {"name": "MwSt", "country": "DE", "basis_points": 1900, "inclusive": True},
        expect=201,
    )
    api("patch", f"/v1/tax-rates/{inclusive['id']}", {"name": "USt"}, expect=200)
    api(
        "post",
        "/v1/tax-rates/",
        {"name": "CA", "country": "US", "state": "CA", "basis_points": 725},
        expect=201,
    )
    for email, external_id, extra in [
        ("ada@example.com", "ada", {"billing_address": {"country": "FR", "city": "Paris"}}),
        ("bob@example.com", "bob", {}),
    ]:
        api(
            "post",
            "/v1/customers/",
            {"email": email, "external_id": external_id, **extra},
            expect=201,
        )
    start = month_start(datetime.now(UTC), 2)
    ada = api(
        "post",
        "/v1/subscriptions/",
        {
            "product_id": pro["id"],
            "external_customer_id": "ada",
            "started_at": start.isoformat(),
            "discount_id": repeating["id"],
        },
        expect=201,
    )
    bob = api(
        "post",
        "/v1/subscriptions/",
        {
            "product_id": basic["id"],
            "external_customer_id": "bob",
            "started_at": start.isoformat(),
            "discount_id": welcome["id"],
        },
        expect=201,
    )

    def usage(at: datetime, calls: int, tokens) -> dict:
        return {
            "events": [
                *[
                    {
                        "name": "api.call",
                        "external_customer_id": "ada",
                        "timestamp": (at + timedelta(minutes=i)).isoformat(),
                    }
                    for i in range(calls)
                ],
                {
                    "name": "llm",
                    "external_customer_id": "ada",
                    "timestamp": at.isoformat(),
                    "metadata": {"tokens": tokens},
                },
            ]
        }

    api("post", "/v1/events/ingest", usage(start + timedelta(days=3), 7, 1500), expect=200)
    ada_period_end = datetime.fromisoformat(ada["current_period_end"])
    cycles.close_due(as_of=ada_period_end + timedelta(hours=2))
    # usage in the current period, and late usage of the closed one
    api("post", "/v1/events/ingest", usage(ada_period_end + timedelta(days=1), 3, 2.5), expect=200)
    api("post", "/v1/events/ingest", usage(ada_period_end - timedelta(hours=3), 1, 0), expect=200)
    api(
        "patch",
        f"/v1/subscriptions/{bob['id']}",
        {"product_id": pro["id"], "proration_behavior": "next_period"},
        expect=200,
    )
    api("patch", f"/v1/subscriptions/{ada['id']}", {"cancel_at_period_end": True}, expect=200)
    api("patch", f"/v1/subscriptions/{ada['id']}", {"cancel_at_period_end": False}, expect=200)
    orders = api("get", "/v1/orders/", expect=200, limit=100, sorting="created_at")["items"]
    cycle = [
        o
        for o in orders
        if o["subscription_id"] == ada["id"] and o["billing_reason"] == "subscription_cycle"
    ]
    assert cycle and cycle[0]["tax_amount"] > 0 and cycle[0]["discount_amount"] > 0, cycle
    assert any(item["meter_id"] for item in cycle[0]["items"])
    api("post", f"/v1/orders/{cycle[0]['id']}/mark-paid", expect=200)
    bob_orders = [o for o in orders if o["subscription_id"] == bob["id"]]
    api("post", f"/v1/orders/{bob_orders[-1]['id']}/void", expect=200)
    for path in ("products/", "benefits/", "discounts/", "tax-rates/", "subscriptions/", "orders/"):
        api("get", f"/v1/{path}", expect=200, limit=100)
    for subscription in (ada, bob):
        read = api("get", f"/v1/subscriptions/{subscription['id']}", expect=200)
        upcoming = api("get", f"/v1/subscriptions/{subscription['id']}/upcoming", expect=200)
    assert read["pending_update"] is not None and upcoming["invoice_number"] is None
    api("get", f"/v1/products/{pro['id']}", expect=200)
    api("get", f"/v1/benefits/{benefit['id']}", expect=200)
    api("get", f"/v1/discounts/{repeating['id']}", expect=200)
    api("get", f"/v1/tax-rates/{inclusive['id']}", expect=200)
    api("get", f"/v1/orders/{cycle[0]['id']}", expect=200)
    api("get", f"/v1/orders/{cycle[0]['id']}/invoice", expect=200)
    api("post", f"/v1/orders/{cycle[0]['id']}/invoice", expect=202)
    api("delete", f"/v1/subscriptions/{bob['id']}", expect=200)


# keys a response may leave out: an address's unset lines, a tier without a flat amount
OPTIONAL_KEYS = {
    "Address": {"line1", "line2", "postal_code", "city", "state"},
    "PriceTier": {"flat_amount"},
}


def billing_components(schema: dict) -> set[str]:
    """The components the billing responses refer to, directly or through other components."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref:
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found.add(name)
                    walk(schema["components"]["schemas"][name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for _, _, operation in billing_operations(schema):
        for code, response in operation["responses"].items():
            if code.startswith("2"):
                walk(response.get("content", {}))
    return found


def strict(schema: dict) -> dict:
    """The billing response components as JSON Schema (OpenAPI 3.0's `nullable: true` → "or
    null", as schemathesis reads it), closed (`additionalProperties: false`): a body must carry
    exactly the documented keys, all of them required but the few `OPTIONAL_KEYS`."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for key, value in list(node.items()):
                node[key] = close(value)
            if node.pop("nullable", False):
                return {"anyOf": [node, {"type": "null"}]}
        elif isinstance(node, list):
            return [close(value) for value in node]
        return node

    names = billing_components(schema)
    assert {"Product", "ProductPrice", "Discount", "Subscription", "Order", "TaxRate"} <= names
    for name in names:
        component = schema["components"]["schemas"][name]
        if "properties" in component:
            optional = set(component["properties"]) - set(component.get("required", []))
            assert optional <= OPTIONAL_KEYS.get(name, set()), (name, optional)
        schema["components"]["schemas"][name] = close(component)
    return schema


def documented_body(schema: dict, path: str, method: str, status: int) -> dict:
    """The response schema of the operation that serves `path` (templated ids matched)."""
    for template, operations in schema["paths"].items():
        pattern = template.split("/")
        parts = path.split("?")[0].split("/")
        if len(pattern) == len(parts) and all(
            p == q or (p.startswith("{") and p.endswith("}"))
            for p, q in zip(pattern, parts, strict=True)
        ):
            response = operations[method]["responses"][str(status)]
            return response["content"]["application/json"]["schema"]
    raise AssertionError(f"no operation for {method} {path}")


def test_scenario_responses_match_the_schema_exactly(client, api, organization):
    schema = strict(with_meter_unions_relaxed(served_schema(client)))
    recorder = Recorder(api)
    billing_scenario(recorder, organization)
    checked = 0
    for method, path, response in recorder.responses:
        if not re.match(BILLING_PATHS, path):
            continue
        if response.status_code == 204:
            assert response.content == b""
            continue
        body = documented_body(schema, path, method, response.status_code)
        validator = Draft4Validator(
            {**body, "components": schema["components"]}, format_checker=FormatChecker()
        )
        errors = sorted(validator.iter_errors(response.json()), key=lambda e: list(e.path))
        assert not errors, (method, path, [(list(e.path), e.message[:300]) for e in errors[:5]])
        checked += 1
    assert checked >= 40


# --- schemathesis: response conformance while fuzzing the billing operations --------------------

fuzzed = schemathesis.openapi.from_dict(
    with_meter_unions_relaxed(SchemaGenerator().get_schema(request=None, public=True))
).include(path_regex=BILLING_PATHS)


@pytest.fixture
def seeded_billing(live_server, token_for, transactional_db):
    """A live organization holding the scenario's catalog, subscriptions and invoices, so lists
    and reads answer with real objects of every kind."""
    organization, secret = token_for("Billing fuzz")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    billing_scenario(Recorder(client), organization)
    return live_server.url, {"Authorization": f"Bearer {secret}"}


def test_billing_responses_conform_when_fuzzed(seeded_billing):
    """One seeded organization for all operations (seeding per operation would cost minutes)."""
    base_url, headers = seeded_billing
    operations = [result.ok() for result in fuzzed.get_all_operations()]
    assert len(operations) == 31  # the 28 with a JSON body, two deletes and the PDF download
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            response = case.call(base_url=base_url, headers=headers)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance], headers=headers
            )

        conforms()
