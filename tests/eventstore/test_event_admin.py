"""The admin's event pages on both stores (conftest `store`): the changelist under each filter,
the search, paging and ordering, an event's page with its parent and children, and a
customer's recent events give the same rows whichever store holds the user events."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin

from customers.services import create_customer
from metering import customer_meters, meters
from metering.admin.events import recent_events_section
from metering.ingest import ingest_events
from metering.models import Event, EventCorrection

pytestmark = pytest.mark.django_db(transaction=True)

T = datetime(2025, 4, 7, tzinfo=UTC)


def at(minutes):
    return (T + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def data(store, token_for):
    if store == "clickhouse":
        # the admin lists every organization: the session's chdb folder keeps the events of
        # earlier tests, whose organizations are gone
        from metering.stores import clickhouse

        clickhouse.client().command(f"TRUNCATE TABLE {clickhouse.layout().events}")
    acme, _ = token_for(f"Admin {store}")
    other, _ = token_for(f"Other {store}")
    ada = create_customer(organization=acme, email="ada@x.io", external_id="ada")
    meter = meters.create_meter(
        organization=acme,
        name="tokens",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "llm"}],
        },
        aggregation={"func": "sum", "property": "tokens"},
    )
    ingest_events(
        organization=acme,
        events=[
            {"name": "run", "customer_id": str(ada.pk), "external_id": "run-1", "timestamp": at(0)},
            {
                "name": "llm",
                "external_customer_id": "ada",
                "external_id": "llm-1",
                "parent_id": "run-1",
                "timestamp": at(1),
                "metadata": {"tokens": 12, "model": "gpt"},
            },
            {
                "name": "llm",
                "external_customer_id": "ada",
                "parent_id": "run-1",
                "timestamp": at(2),
                "metadata": {"tokens": 3},
            },
            {"name": "llm", "external_customer_id": "bob", "timestamp": at(3)},
            {"name": "embed", "external_customer_id": "cy", "timestamp": at(4)},
        ],
    )
    ingest_events(
        organization=other,
        events=[{"name": "llm", "external_customer_id": "ada", "timestamp": at(5)}],
    )
    bob = create_customer(organization=acme, email="bob@x.io", external_id="bob")  # links
    customer_meters.grant_credits(customer=ada, meter=meter, units=5, timestamp=T + timedelta(1))
    return acme, other, ada, bob


def rows(admin_client, query=""):
    response = admin_client.get(f"/admin/metering/event/{query}")
    assert response.status_code == 200, response.content[:500]
    cl = response.context["cl"]
    listed = [
        (e.name, e.external_id, e.customer.email if e.customer_id else e.external_customer_id)
        for e in cl.result_list
    ]
    return listed, cl.result_count


RUN = ("run", "run-1", "ada@x.io")
LLM_1 = ("llm", "llm-1", "ada@x.io")
LLM_2 = ("llm", None, "ada@x.io")
BOB = ("llm", None, "bob@x.io")
CY = ("embed", None, "cy")
OTHER = ("llm", None, "ada")  # the other organization's "ada" is nobody yet
CREDIT = ("meter.credited", None, "ada@x.io")


def test_the_changelist_filters_search_and_pages(data, admin_client, monkeypatch):
    acme, other, ada, bob = data
    assert rows(admin_client) == ([CREDIT, OTHER, CY, BOB, LLM_2, LLM_1, RUN], 7)
    assert rows(admin_client, f"?organization={acme.pk}") == (
        [CREDIT, CY, BOB, LLM_2, LLM_1, RUN],
        6,
    )
    assert rows(admin_client, "?name=llm&o=0") == ([LLM_1, LLM_2, BOB, OTHER], 4)
    assert rows(admin_client, "?source=system") == ([CREDIT], 1)
    assert rows(admin_client, "?source=user&period=30d") == ([], 0)
    assert rows(admin_client, f"?customer={ada.pk}") == ([CREDIT, LLM_2, LLM_1, RUN], 4)
    assert rows(admin_client, f"?customer={bob.pk}") == ([BOB], 1)
    assert rows(admin_client, "?q=llm-1") == ([LLM_1], 1)
    assert rows(admin_client, "?q=bob") == ([BOB], 1)  # linked after it was sent
    assert rows(admin_client, "?q=cy") == ([CY], 1)
    assert rows(admin_client, "?q=ada")[0] == [CREDIT, OTHER, LLM_2, LLM_1, RUN]
    run_id = _listed(admin_client, "?name=run")[0].pk
    assert rows(admin_client, f"?q={run_id}") == ([RUN], 1)
    assert rows(admin_client, f"?parent={run_id}") == ([LLM_2, LLM_1], 2)
    window = f"?timestamp__gte={at(1)}&timestamp__lt={at(4)}".replace("+", "%2B")
    assert rows(admin_client, window) == ([BOB, LLM_2, LLM_1], 3)
    monkeypatch.setattr(admin.site._registry[Event], "list_per_page", 2)
    assert rows(admin_client, "?p=2") == ([CY, BOB], 7)
    assert rows(admin_client, "?p=4") == ([RUN], 7)


def _listed(admin_client, query):
    return admin_client.get(f"/admin/metering/event/{query}").context["cl"].result_list


def test_an_events_page_and_a_customers_recent_events(data, admin_client):
    acme, other, ada, bob = data
    (run,) = _listed(admin_client, "?name=run")
    child = next(e for e in _listed(admin_client, "?name=llm") if e.external_id == "llm-1")
    page = admin_client.get(f"/admin/metering/event/{child.pk}/change/")
    assert page.status_code == 200
    original = page.context["original"]
    assert (original.name, original.parent_id, original.customer_id) == ("llm", run.pk, ada.pk)
    text = page.content.decode()
    assert f"/admin/metering/event/{run.pk}/change/" in text  # the parent's link
    assert "ada@x.io" in text and "&quot;model&quot;: &quot;gpt&quot;" in text
    assert "<td>sum</td><td>12</td>" in text  # the meter it matched, with its value
    parent_page = admin_client.get(f"/admin/metering/event/{run.pk}/change/").content.decode()
    assert parent_page.count("/change/\">llm @ 2025-04-07 00:0") == 2  # its two children
    assert admin_client.get(
        "/admin/metering/event/00000000-0000-0000-0000-000000000001/change/", follow=True
    ).redirect_chain[-1][0] == "/admin/"
    recent = recent_events_section(ada)
    assert [name for name in ("meter.credited", "llm", "run") if name in recent] == [
        "meter.credited",
        "llm",
        "run",
    ]
    assert recent.index("meter.credited") < recent.index("llm-1") < recent.index("run-1")
    assert recent.count("<tr>") == 5  # the header and four events


def test_a_corrected_event_is_marked_in_the_list_and_on_both_pages(data, admin_client):
    acme, other, ada, bob = data
    (llm_1,) = [e for e in _listed(admin_client, "?name=llm") if e.external_id == "llm-1"]
    response = admin_client.post(
        f"/admin/metering/event/{llm_1.pk}/correct/",
        {
            "action": "replace",
            "reason": "tokens mis-counted",
            "name": "llm",
            "metadata": '{"tokens": 7.5, "model": "gpt"}',
        },
    )
    made = EventCorrection.objects.get()
    new_page = f"/admin/metering/event/{made.replacement_id}/change/"
    assert response.status_code == 302 and response["Location"] == new_page
    listed = admin_client.get(f"/admin/metering/event/?customer={ada.pk}")
    listed_rows = listed.context["cl"].result_list
    sources = sorted((e.name, e.external_id or "", e.source) for e in listed_rows)
    assert sources == [
        ("llm", "", "user"),
        ("llm", "", "user"),  # the replacement
        ("llm", "llm-1", "canceled"),
        ("meter.credited", "", "system"),
        ("run", "run-1", "user"),
    ]
    assert listed.content.decode().count("ml-status-void") == 1  # the "Canceled" badge
    assert rows(admin_client, "?source=canceled") == ([LLM_1], 1)
    assert rows(admin_client, "?source=user")[1] == 6  # the replacement in, the original out
    original = admin_client.get(f"/admin/metering/event/{llm_1.pk}/change/")
    assert original.context["original"].source == "canceled"
    text = original.content.decode()
    assert made.actor == "staff:admin"  # pytest-django's admin_client
    assert "tokens mis-counted" in text and "by staff:admin" in text
    assert f'href="{new_page}"' in text and "/correct/" not in text
    replacement = admin_client.get(new_page).content.decode()
    assert f'href="/admin/metering/event/{llm_1.pk}/change/"' in replacement
    assert "<td>sum</td><td>7.5</td>" in replacement  # the meter it matches, with its value
    assert f"/admin/metering/event/{made.replacement_id}/correct/" in replacement
    recent = recent_events_section(ada)
    assert recent.count("<tr>") == 6 and recent.count("llm (canceled)") == 1  # header, 5 events
