"""Every event validation rule (docs/api.md), each with its 422 `loc`; nothing is stored on error."""

from datetime import UTC, datetime, timedelta

import pytest

from metering.models import Event

pytestmark = pytest.mark.django_db

GOOD = {"name": "api.call", "external_customer_id": "u1"}


def ingest(api, events):
    return api.post("/v1/events/ingest", {"events": events}, format="json")


def locs(response):
    assert response.status_code == 422, response.content
    return [tuple(item["loc"]) for item in response.json()["detail"]]


@pytest.mark.parametrize(
    ("event", "loc"),
    [
        ({"external_customer_id": "u1"}, ("body", "events", 1, "name")),
        ({"name": "", "external_customer_id": "u1"}, ("body", "events", 1, "name")),
        ({"name": "x" * 129, "external_customer_id": "u1"}, ("body", "events", 1, "name")),
        ({"name": 5, "external_customer_id": "u1"}, ("body", "events", 1, "name")),
        ({"name": "a"}, ("body", "events", 1)),
        (
            {
                "name": "a",
                "external_customer_id": "u1",
                "customer_id": "7f0b3b7e-5e0f-4a4e-9d43-8c55f1f8a111",
            },
            ("body", "events", 1),
        ),
        ({"name": "a", "customer_id": "not-a-uuid"}, ("body", "events", 1, "customer_id")),
        (
            {"name": "a", "customer_id": "7f0b3b7e-5e0f-4a4e-9d43-8c55f1f8a111"},
            ("body", "events", 1, "customer_id"),
        ),
        (
            {"name": "a", "external_customer_id": "x" * 257},
            ("body", "events", 1, "external_customer_id"),
        ),
        ({**GOOD, "timestamp": "yesterday"}, ("body", "events", 1, "timestamp")),
        ({**GOOD, "timestamp": "2026-01-01T00:00:00"}, ("body", "events", 1, "timestamp")),
        ({**GOOD, "external_id": "e" * 257}, ("body", "events", 1, "external_id")),
        ({**GOOD, "parent_id": "p" * 257}, ("body", "events", 1, "parent_id")),
        (
            {**GOOD, "organization_id": "7f0b3b7e-5e0f-4a4e-9d43-8c55f1f8a111"},
            ("body", "events", 1, "organization_id"),
        ),
        ({**GOOD, "unknown_field": 1}, ("body", "events", 1, "unknown_field")),
        ({**GOOD, "metadata": {"k": None}}, ("body", "events", 1, "metadata", "k")),
        ({**GOOD, "metadata": {"k": [1, 2]}}, ("body", "events", 1, "metadata", "k")),
        ({**GOOD, "metadata": {"k": {"nested": 1}}}, ("body", "events", 1, "metadata", "k")),
        ({**GOOD, "metadata": {"k": "v" * 501}}, ("body", "events", 1, "metadata", "k")),
        ({**GOOD, "metadata": {"k" * 41: 1}}, ("body", "events", 1, "metadata", "k" * 41)),
        ({**GOOD, "metadata": {"": 1}}, ("body", "events", 1, "metadata", "")),
        ({**GOOD, "metadata": {f"k{i}": i for i in range(51)}}, ("body", "events", 1, "metadata")),
        ({**GOOD, "metadata": "flat"}, ("body", "events", 1, "metadata")),
        (
            {**GOOD, "metadata": {"_llm": {"vendor": "openai", "model": "m", "input_tokens": 1}}},
            ("body", "events", 1, "metadata", "_llm", "output_tokens"),
        ),
        (
            {
                **GOOD,
                "metadata": {
                    "_llm": {
                        "vendor": "openai",
                        "model": "m",
                        "input_tokens": -1,
                        "output_tokens": 1,
                        "total_tokens": 0,
                    }
                },
            },
            ("body", "events", 1, "metadata", "_llm", "input_tokens"),
        ),
        (
            {**GOOD, "metadata": {"_cost": {"amount": "abc", "currency": "usd"}}},
            ("body", "events", 1, "metadata", "_cost", "amount"),
        ),
        (
            {**GOOD, "metadata": {"_cost": {"amount": 12, "currency": "dollars"}}},
            ("body", "events", 1, "metadata", "_cost", "currency"),
        ),
        ("not an object", ("body", "events", 1)),
    ],
)
def test_each_rule_reports_its_location_and_stores_nothing(api, event, loc):
    response = ingest(api, [GOOD, event])
    assert loc in locs(response)
    assert Event.objects.count() == 0


def test_future_timestamp_over_five_minutes_is_rejected_but_within_is_accepted(api):
    now = datetime.now(UTC)
    late = (now + timedelta(minutes=6)).isoformat()
    soon = (now + timedelta(minutes=4)).isoformat()
    assert locs(ingest(api, [{**GOOD, "timestamp": late}])) == [("body", "events", 0, "timestamp")]
    assert ingest(api, [{**GOOD, "timestamp": soon}]).json() == {"inserted": 1, "duplicates": 0}


def test_no_lower_bound_on_timestamps(api):
    response = ingest(api, [{**GOOD, "timestamp": "1970-01-01T00:00:00Z"}])
    assert response.json() == {"inserted": 1, "duplicates": 0}


def test_every_problem_is_reported_not_only_the_first(api):
    events = [GOOD, {"name": ""}, GOOD, {**GOOD, "timestamp": "x", "external_id": ""}]
    found = locs(ingest(api, events))
    assert ("body", "events", 1, "name") in found
    assert ("body", "events", 1) in found  # no customer reference
    assert ("body", "events", 3, "timestamp") in found
    assert ("body", "events", 3, "external_id") in found
    assert Event.objects.count() == 0


def test_customer_of_another_organization_is_unknown(api, token_for):
    from customers.services import create_customer

    other_org, _ = token_for("Other")
    stranger = create_customer(organization=other_org, email="s@example.com")
    found = locs(ingest(api, [{"name": "a", "customer_id": str(stranger.pk)}]))
    assert found == [("body", "events", 0, "customer_id")]


def test_deleted_customer_is_unknown(api, organization):
    from customers.services import create_customer, delete_customer

    customer = create_customer(organization=organization, email="d@example.com")
    delete_customer(customer=customer)
    assert locs(ingest(api, [{"name": "a", "customer_id": str(customer.pk)}])) == [
        ("body", "events", 0, "customer_id")
    ]


def test_structured_llm_and_cost_metadata_are_accepted_and_exact(api):
    metadata = {
        "_llm": {
            "vendor": "openai",
            "model": "gpt-4o",
            "input_tokens": 10,
            "output_tokens": 20,
            "total_tokens": 30,
        },
        "_cost": {"amount": "0.125", "currency": "USD"},
        "latency": 0.1,
        "ok": True,
    }
    assert ingest(api, [{**GOOD, "metadata": metadata}]).json()["inserted"] == 1
    stored = Event.objects.get().metadata
    # a number (a sum meter over `_cost.amount` adds it), exactly the decimal sent
    assert stored["_cost"] == {"amount": 0.125, "currency": "usd"}
    assert stored["_llm"]["total_tokens"] == 30


def test_decimal_metadata_is_stored_exactly_as_written(api):
    from django.db import connection

    ingest(api, [{**GOOD, "metadata": {"amount": 0.1}}, {**GOOD, "metadata": {"amount": 0.2}}])
    with connection.cursor() as cursor:
        cursor.execute("SELECT sum((metadata->>'amount')::numeric)::text FROM metering_event")
        assert cursor.fetchone()[0] == "0.3"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"events": "nope"},
        {"events": [GOOD], "extra": 1},
    ],
)
def test_bad_envelope(api, body):
    response = api.post("/v1/events/ingest", body, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"
