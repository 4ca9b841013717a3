"""Idempotency, batch limits, concurrency, customer linking and parent/child links."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from customers.services import create_customer, update_customer
from metering.models import Event, EventName


def ingest(api, events):
    return api.post("/v1/events/ingest", {"events": events}, format="json")


@pytest.mark.django_db
def test_empty_batch(api):
    assert ingest(api, []).json() == {"inserted": 0, "duplicates": 0}


@pytest.mark.django_db
def test_duplicates_within_and_across_batches_first_one_wins(api):
    first = ingest(
        api,
        [
            {"name": "a", "external_customer_id": "u1", "external_id": "e1", "metadata": {"v": 1}},
            {"name": "a", "external_customer_id": "u1", "external_id": "e1", "metadata": {"v": 2}},
            {"name": "a", "external_customer_id": "u1", "external_id": "e2"},
            {"name": "a", "external_customer_id": "u1"},
        ],
    )
    assert first.json() == {"inserted": 3, "duplicates": 1}
    second = ingest(
        api,
        [
            {"name": "a", "external_customer_id": "u1", "external_id": "e1", "metadata": {"v": 3}},
            {"name": "a", "external_customer_id": "u1", "external_id": "e3"},
        ],
    )
    assert second.json() == {"inserted": 1, "duplicates": 1}
    assert Event.objects.get(external_id="e1").metadata == {"v": 1}
    assert Event.objects.count() == 4


@pytest.mark.django_db
def test_same_external_id_in_two_organizations_is_two_events(api, token_for):
    _, other_secret = token_for("Other")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {other_secret}")
    event = {"name": "a", "external_customer_id": "u1", "external_id": "shared"}
    assert ingest(api, [event]).json()["inserted"] == 1
    assert ingest(other, [event]).json()["inserted"] == 1


@pytest.mark.django_db
def test_ten_thousand_events_in_one_batch_and_the_error_for_one_more(api, settings):
    events = [
        {"name": "bulk", "external_customer_id": f"u{i % 50}", "external_id": f"b{i}"}
        for i in range(10_000)
    ]
    assert ingest(api, events).json() == {"inserted": 10_000, "duplicates": 0}
    assert EventName.objects.get(name="bulk").occurrences == 10_000
    too_many = [*events, {"name": "bulk", "external_customer_id": "u1"}]
    response = ingest(api, too_many)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "events"]
    assert "10000" in detail[0]["msg"]
    assert Event.objects.count() == 10_000


@pytest.mark.django_db
def test_body_over_the_limit_is_413_and_stores_nothing(api, settings):
    settings.INGEST_MAX_BODY_BYTES = 2048
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    events = [
        {"name": "a", "external_customer_id": "u1", "metadata": {"pad": "x" * 400}}
        for _ in range(10)
    ]
    response = ingest(api, events)
    assert response.status_code == 413
    assert response.json()["error"] == "RequestTooLarge"
    assert Event.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_batches_store_each_event_once(token_for):
    """Six threads (six database connections) send overlapping batches at the same moment."""
    _, secret = token_for("Concurrent")
    batches = [
        [
            {
                "name": "c",
                "external_customer_id": f"u{i % 7}",
                "external_id": f"x{(offset + i) % 300}",
            }
            for i in range(200)
        ]
        for offset in range(0, 600, 100)
    ]
    results = [None] * len(batches)
    barrier = threading.Barrier(len(batches))

    def send(index):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        barrier.wait()
        results[index] = ingest(client, batches[index]).json()
        connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Event.objects.filter(name="c").count() == 300
    assert Event.objects.filter(name="c").values("external_id").distinct().count() == 300
    assert sum(r["inserted"] for r in results) == 300
    assert sum(r["inserted"] + r["duplicates"] for r in results) == 6 * 200


@pytest.mark.django_db
def test_events_sent_before_the_customer_exists_are_linked_on_create(api, organization):
    ingest(
        api,
        [
            {
                "name": "early",
                "external_customer_id": "late-user",
                "timestamp": "2026-01-02T00:00:00Z",
            },
            {
                "name": "early",
                "external_customer_id": "late-user",
                "timestamp": "2026-01-01T00:00:00Z",
            },
            {"name": "early", "external_customer_id": "someone-else"},
        ],
    )
    assert Event.objects.filter(customer__isnull=False).count() == 0
    customer = create_customer(
        organization=organization, email="late@example.com", external_id="late-user"
    )
    assert Event.objects.filter(customer=customer).count() == 2
    assert customer.first_user_event_at.isoformat() == "2026-01-01T00:00:00+00:00"
    ingest(api, [{"name": "after", "external_customer_id": "late-user"}])
    assert Event.objects.filter(customer=customer).count() == 3


@pytest.mark.django_db
def test_events_are_linked_when_an_external_id_is_set_later(api, organization):
    customer = create_customer(organization=organization, email="x@example.com")
    ingest(api, [{"name": "e", "external_customer_id": "later"}])
    update_customer(customer=customer, changes={"external_id": "later"})
    assert Event.objects.filter(customer=customer).count() == 1


@pytest.mark.django_db
def test_customer_id_and_external_id_routes_count_the_same(api, organization):
    customer = create_customer(
        organization=organization, email="both@example.com", external_id="both"
    )
    ingest(
        api,
        [
            {"name": "e", "customer_id": str(customer.pk)},
            {"name": "e", "external_customer_id": "both"},
        ],
    )
    assert Event.objects.filter(customer=customer).count() == 2
    listed = api.get("/v1/events/", {"external_customer_id": "both"}).json()
    assert listed["pagination"]["total_count"] == 2
    assert {item["external_customer_id"] for item in listed["items"]} == {"both"}


@pytest.mark.django_db
def test_parent_links_by_external_id_and_id_including_child_before_parent(api):
    ingest(
        api,
        [{"name": "child", "external_customer_id": "u", "external_id": "c1", "parent_id": "run-1"}],
    )
    assert Event.objects.get(external_id="c1").parent_id is None
    ingest(
        api,
        [
            {"name": "run", "external_customer_id": "u", "external_id": "run-1"},
            {
                "name": "child",
                "external_customer_id": "u",
                "external_id": "c2",
                "parent_id": "run-1",
            },
        ],
    )
    parent = Event.objects.get(external_id="run-1")
    assert set(Event.objects.filter(parent=parent).values_list("external_id", flat=True)) == {
        "c1",
        "c2",
    }
    ingest(
        api,
        [
            {
                "name": "grandchild",
                "external_customer_id": "u",
                "external_id": "g1",
                "parent_id": str(Event.objects.get(external_id="c1").pk),
            }
        ],
    )
    assert Event.objects.get(external_id="g1").parent.external_id == "c1"

    roots = api.get("/v1/events/", {"depth": 0}).json()
    assert [item["external_id"] for item in roots["items"]] == ["run-1"]
    assert roots["items"][0]["child_count"] == 2
    tree = api.get("/v1/events/", {"depth": 1}).json()
    assert {item["name"] for item in tree["items"]} == {"run", "child"}
    anchored = api.get("/v1/events/", {"parent_id": str(parent.pk), "depth": 2}).json()
    assert anchored["pagination"]["total_count"] == 4
    children = api.get("/v1/events/", {"parent_id": str(parent.pk)}).json()
    assert children["pagination"]["total_count"] == 2
