"""The real polar-sdk client against a live Meterline HTTP server: every response deserializes."""

from datetime import UTC, datetime, timedelta

import pytest
from polar.v2026_10.errors import HTTPValidationError, ResourceNotFound

pytestmark = pytest.mark.django_db(transaction=True)


def test_customers_roundtrip(polar):
    created = polar.customers.create(
        email="Ada@Example.com",
        external_id="ada",
        name="Ada",
        metadata={"plan": "pro"},
        billing_address={"country": "GB", "city": "London"},
    )
    assert created.email == "ada@example.com"
    assert created.billing_address.country == "GB"
    assert polar.customers.get(created.id).external_id == "ada"
    assert polar.customers.get_external("ada").id == created.id
    updated = polar.customers.update(created.id, name="Ada L.")
    assert updated.name == "Ada L."
    assert updated.modified_at is not None
    polar.customers.delete(created.id)
    with pytest.raises(ResourceNotFound):
        polar.customers.get(created.id)


def test_events_roundtrip(polar):
    customer = polar.customers.create(email="bob@example.com", external_id="bob")
    start = datetime(2026, 10, 1, tzinfo=UTC)
    events = [
        {
            "name": "api.call" if i % 2 else "llm.completion",
            "external_customer_id": "bob" if i % 3 else "carol",
            "external_id": f"evt-{i}",
            "timestamp": (start + timedelta(hours=i)).isoformat(),
            "metadata": {"route": f"/r/{i % 4}", "latency_ms": 10 + i, "ok": i % 5 != 0},
        }
        for i in range(25)
    ]
    events.append(
        {
            "name": "api.call",
            "customer_id": customer.id,
            "external_id": "evt-by-id",
            "timestamp": (start + timedelta(days=3)).isoformat(),
        }
    )
    result = polar.events.ingest(events=events)
    assert (result.inserted, result.duplicates) == (26, 0)
    again = polar.events.ingest(events=events[:5])
    assert (again.inserted, again.duplicates) == (0, 5)

    bob = polar.events.list(external_customer_id="bob", limit=100)
    assert bob.pagination.total_count == 17  # 16 by external id + 1 by customer id
    assert all(e.customer_id == customer.id for e in bob.items)
    by_customer = polar.events.list(customer_id=customer.id, limit=100)
    assert by_customer.pagination.total_count == 17

    named = polar.events.list(name="llm.completion", limit=100)
    assert named.pagination.total_count == 13

    window = polar.events.list(
        start_timestamp=(start + timedelta(hours=5)).isoformat(),
        end_timestamp=(start + timedelta(hours=9)).isoformat(),
        sorting=["timestamp"],
    )
    assert [e.metadata["latency_ms"] for e in window.items] == [15, 16, 17, 18, 19]

    pages = [polar.events.list(limit=10, page=p) for p in (1, 2, 3)]
    assert pages[0].pagination.total_count == 26 and pages[0].pagination.max_page == 3
    seen = [e.id for page in pages for e in page.items]
    assert len(seen) == len(set(seen)) == 26
    walked, page = [], 1
    while True:
        listing = polar.events.list(limit=7, page=page)
        walked.extend(e.id for e in listing.items)
        if page >= listing.pagination.max_page:
            break
        page += 1
    assert len(walked) == len(set(walked)) == 26

    one = polar.events.get(seen[0])
    assert one.id == seen[0] and one.source == "user"

    names = polar.events.list_names()
    assert {(n.name, n.occurrences) for n in names.items} == {
        ("api.call", 13),
        ("llm.completion", 13),
    }
    bob_names = polar.events.list_names(external_customer_id="bob")
    assert sum(n.occurrences for n in bob_names.items) == 17

    meta = polar.events.list(metadata={"route": "/r/1"}, limit=100)
    assert meta.pagination.total_count == 6  # i % 4 == 1 for i in 0..24


def test_customer_state(polar):
    polar.events.ingest(events=[{"name": "a", "external_customer_id": "dora"}])
    customer = polar.customers.create(email="dora@example.com", external_id="dora")
    state = polar.customers.get_state(customer.id)
    assert (
        state.id == customer.id
        and state.active_subscriptions == []
        and state.granted_benefits == []
    )
    assert isinstance(state.active_meters, list)
    external_state = polar.customers.get_state_external("dora")
    assert external_state.first_user_event_at is not None


def test_validation_error_deserializes(polar):
    with pytest.raises(HTTPValidationError) as caught:
        polar.events.ingest(events=[{"name": "", "external_customer_id": "x"}])
    assert caught.value.status_code == 422
    assert caught.value.error.detail[0].loc == ["body", "events", 0, "name"]
