"""The event list and lookup API on both stores: the same requests give the same items (user
events from the store, credits and resets from PostgreSQL, merged by timestamp)."""

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from customers.services import create_customer
from metering import customer_meters, meters
from metering.ingest import ingest_events

pytestmark = pytest.mark.django_db(transaction=True)

T = datetime(2025, 2, 3, tzinfo=UTC)


def test_lists_filters_trees_and_lookups(store, token_for):
    org, secret = token_for(f"Events {store}")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    meter = meters.create_meter(
        organization=org,
        name="big",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "tokens", "operator": "gte", "value": 10}],
        },
        aggregation={"func": "count"},
    )
    ingest_events(
        organization=org,
        events=[
            {
                "name": "run",
                "external_customer_id": "ada",
                "external_id": "run-1",
                "timestamp": T.isoformat(),
            },
            {
                "name": "llm",
                "external_customer_id": "ada",
                "parent_id": "run-1",
                "timestamp": (T + timedelta(minutes=1)).isoformat(),
                "metadata": {"tokens": 12, "_cost": {"amount": "0.125", "currency": "usd"}},
            },
            {
                "name": "llm",
                "external_customer_id": "bob",
                "timestamp": (T + timedelta(minutes=2)).isoformat(),
                "metadata": {"tokens": 3},
            },
        ],
    )
    ada = create_customer(organization=org, email="ada@x.io", external_id="ada")
    customer_meters.grant_credits(
        customer=ada, meter=meter, units=5, timestamp=T + timedelta(minutes=3)
    )

    def items(**query):
        response = api.get("/v1/events/", query)
        assert response.status_code == 200, response.content
        return [
            (e["name"], e["external_customer_id"], e["child_count"])
            for e in response.json()["items"]
        ], response.json()["pagination"]

    everything, pagination = items()
    assert everything == [
        ("meter.credited", "ada", 0),
        ("llm", "bob", 0),
        ("llm", "ada", 0),
        ("run", "ada", 1),
    ]
    assert pagination == {"total_count": 4, "max_page": 1}
    assert items(customer_id=str(ada.pk), sorting="timestamp")[0] == [
        ("run", "ada", 1),
        ("llm", "ada", 0),
        ("meter.credited", "ada", 0),
    ]
    assert items(meter_id=str(meter.pk))[0] == [("llm", "ada", 0)]
    assert items(name="llm", limit=1, page=2) == (
        [("llm", "ada", 0)],
        {"total_count": 2, "max_page": 2},
    )
    assert items(source="user", query="RU")[0] == [("run", "ada", 1)]
    run = api.get("/v1/events/", {"name": "run"}).json()["items"][0]
    (child,) = api.get("/v1/events/", {"parent_id": run["id"]}).json()["items"]
    assert (child["parent_id"], child["customer_id"]) == (run["id"], str(ada.pk))
    assert child["metadata"]["_cost"] == {"amount": "0.125", "currency": "usd"}
    looked_up = api.get(f"/v1/events/{child['id']}").json()
    assert looked_up == child
    assert api.get("/v1/events/00000000-0000-0000-0000-000000000001").status_code == 404
