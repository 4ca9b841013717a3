"""Reads of the event lists on both stores (conftest `store`): a customer's event names, the
meter editor's preview and the event tree from the roots. The same events give the same
answers, to the digit, whichever store holds them."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from customers.services import create_customer
from metering import aggregation, customer_meters, meters
from metering.admin.meter_editor import compute_preview
from metering.ingest import ingest_events

pytestmark = pytest.mark.django_db(transaction=True)

T = datetime(2025, 3, 3, tzinfo=UTC)
LLM = {"conjunction": "and", "clauses": [{"property": "name", "operator": "eq", "value": "llm"}]}


def at(minutes):
    return (T + timedelta(minutes=minutes)).isoformat()


def llm(customer, minutes, tokens=None, model=None, **extra):
    metadata = {k: v for k, v in (("tokens", tokens), ("model", model)) if v is not None}
    return {
        "name": "llm",
        "external_customer_id": customer,
        "timestamp": at(minutes),
        "metadata": metadata,
        **extra,
    }


@pytest.fixture
def api_org(store, token_for):
    org, secret = token_for(f"Lists {store}")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return api, org


def test_a_customers_event_names(api_org):
    api, org = api_org
    meter = meters.create_meter(
        organization=org, name="calls", filter=LLM, aggregation={"func": "count"}
    )
    ada = create_customer(organization=org, email="ada@x.io", external_id="ada")
    ingest_events(
        organization=org,
        events=[
            llm("ada", 0, 1),
            llm("ada", 60, 2),
            {"name": "Run", "customer_id": str(ada.pk), "timestamp": at(30)},
            llm("bob", 10, 5),  # sent before bob exists: his once he does
            {"name": "embed", "external_customer_id": "bob", "timestamp": at(-60)},
            llm("cy", 5, 7),  # another customer's
        ],
    )
    bob = create_customer(organization=org, email="bob@x.io", external_id="bob")
    customer_meters.grant_credits(customer=ada, meter=meter, units=5, timestamp=T + timedelta(1))

    def names(**query):
        response = api.get("/v1/events/names", query)
        assert response.status_code == 200, response.content
        body = response.json()
        return [
            (n["name"], n["source"], n["occurrences"], n["first_seen"][:16], n["last_seen"][:16])
            for n in body["items"]
        ], body["pagination"]

    assert names(customer_id=str(ada.pk)) == (
        [
            ("meter.credited", "system", 1, "2025-03-04T00:00", "2025-03-04T00:00"),
            ("llm", "user", 2, "2025-03-03T00:00", "2025-03-03T01:00"),
            ("Run", "user", 1, "2025-03-03T00:30", "2025-03-03T00:30"),
        ],
        {"total_count": 3, "max_page": 1},
    )
    assert names(external_customer_id="bob", sorting="name")[0] == [
        ("embed", "user", 1, "2025-03-02T23:00", "2025-03-02T23:00"),
        ("llm", "user", 1, "2025-03-03T00:10", "2025-03-03T00:10"),
    ]
    # by id too, and the two customers together
    assert names(customer_id=str(bob.pk), sorting="-occurrences")[0][0][:2] == ("embed", "user")
    both, pagination = names(
        customer_id=[str(ada.pk), str(bob.pk)], sorting=["-occurrences", "name"], limit=2, page=1
    )
    assert both == [
        ("llm", "user", 3, "2025-03-03T00:00", "2025-03-03T01:00"),
        ("Run", "user", 1, "2025-03-03T00:30", "2025-03-03T00:30"),
    ]
    assert pagination == {"total_count": 4, "max_page": 2}
    assert names(external_customer_id="cy", source="system")[0] == []
    assert [n[0] for n in names(customer_id=str(ada.pk), source="user", query="RU")[0]] == ["Run"]
    assert [n[0] for n in names(customer_id=str(ada.pk), query="credit")[0]] == ["meter.credited"]


HUGE, TINY = Decimal("1E+39"), Decimal("1E-20")
# per aggregation: ada's value, bob's, and the two days' (March 3rd, 4th)
PREVIEWS = {
    "count": (4, 2, 5, 2),
    "sum": (Decimal("42.5"), HUGE, aggregation.exact_sum([HUGE, Decimal("30.5"), TINY]), 12),
    "avg": (
        aggregation.DECIMAL_CONTEXT.divide(Decimal("42.5"), 3),
        HUGE,
        aggregation.DECIMAL_CONTEXT.divide(aggregation.exact_sum([HUGE, Decimal("30.5"), TINY]), 4),
        12,
    ),
    "min": (10, HUGE, TINY, 12),
    "max": (Decimal("20.5"), HUGE, HUGE, 12),
    "unique": (2, 1, 3, 2),  # models: gpt, claude | true | gpt, true, 3 | claude, gpt
}


@pytest.mark.parametrize("func", PREVIEWS)
def test_the_meter_editors_preview(store, token_for, func):
    org, _ = token_for(f"Preview {store}")
    create_customer(organization=org, email="ada@x.io", external_id="ada")
    ingest_events(
        organization=org,
        events=[
            llm("ada", 0, 10, "gpt"),
            llm("ada", 1, Decimal("20.5"), "gpt"),
            llm("ada", 24 * 60, None, "claude"),  # no number: counted, no value
            llm("ada", 24 * 60 + 6, 12, "gpt"),
            llm("ada", 24 * 60 + 5, 12, name="other"),  # not matched
            llm("ada", -60 * 24 * 40, 99, "old"),  # before the 30 days
            llm("bob", 5, HUGE, True),
            llm("bob", 6, "text"),  # a string is no number, and no model
            llm("cy", 7, TINY, 3),  # never a customer: in the total, not the customers
        ],
    )
    create_customer(organization=org, email="bob@x.io", external_id="bob")  # links his events
    aggregation_ = {"func": func}
    if func != "count":
        aggregation_["property"] = "model" if func == "unique" else "tokens"
    preview = compute_preview(
        organization_id=org.pk,
        filter_=LLM,
        aggregation=aggregation_,
        now=T + timedelta(days=1, hours=1),
    )
    ada, bob, first_day, second_day = PREVIEWS[func]
    assert preview.error == ""
    assert (preview.matching_events, preview.linked_events, preview.unlinked_events) == (7, 6, 1)
    assert preview.customers_with_usage == 2
    assert sorted(
        (customer.external_id, events, value) for customer, events, value, _ in preview.top_customers
    ) == [("ada", 4, ada), ("bob", 2, bob)]
    assert len(preview.days) == 30 and preview.days[0][0] == date(2025, 2, 3)
    assert [(day, events, value) for day, events, value in preview.days if events] == [
        (date(2025, 3, 3), 5, first_day),
        (date(2025, 3, 4), 2, second_day),
    ]


def test_the_event_tree_from_the_roots(api_org):
    api, org = api_org
    meter = meters.create_meter(
        organization=org, name="calls", filter=LLM, aggregation={"func": "count"}
    )

    def sent(name, minutes, key=None, parent=None):
        body = {"name": name, "external_customer_id": "ada", "timestamp": at(minutes)}
        if key:
            body["external_id"] = key
        if parent:
            body["parent_id"] = parent
        return body

    ingest_events(
        organization=org,
        events=[
            sent("root", 0, "r1"),
            sent("child", 1, "c1", "r1"),
            sent("grandchild", 2, "g1", "c1"),
            sent("great-grandchild", 3, None, "g1"),
            sent("dangling", 4, None, "nobody"),  # its parent never came: a root
            sent("orphan", 5, "o1", "late"),  # adopted by the parent sent after it
        ],
    )
    ingest_events(
        organization=org,
        events=[
            sent("late parent", 6, "late"),
            sent("ghost child", 7, None, "00000000-0000-0000-0000-00000000abcd"),  # no such event
        ],
    )
    ada = create_customer(organization=org, email="ada@x.io", external_id="ada")
    customer_meters.grant_credits(customer=ada, meter=meter, units=5, timestamp=T + timedelta(1))

    def tree(depth):
        response = api.get("/v1/events/", {"depth": depth, "sorting": "timestamp"})
        assert response.status_code == 200, response.content
        return [e["name"] for e in response.json()["items"]]

    roots = ["root", "dangling", "late parent", "ghost child", "meter.credited"]
    assert tree(0) == roots
    assert tree(1) == [
        "root",
        "child",
        "dangling",
        "orphan",
        "late parent",
        "ghost child",
        "meter.credited",
    ]
    assert tree(2) == [
        "root",
        "child",
        "grandchild",
        "dangling",
        "orphan",
        "late parent",
        "ghost child",
        "meter.credited",
    ]
    assert len(tree(5)) == 9
    parents = {
        e["name"]: e["parent_id"]
        for e in api.get("/v1/events/", {"limit": 20}).json()["items"]
    }
    assert parents["ghost child"] is None and parents["dangling"] is None
    assert parents["orphan"] is not None and parents["child"] is not None
    response = api.get("/v1/events/", {"depth": 3, "name": "great-grandchild"})
    assert response.json()["pagination"] == {"total_count": 1, "max_page": 1}
