"""The events changelist never counts the whole table and runs a bounded number of queries."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from metering.admin.events import EstimatedCountPaginator
from metering.ingest import ingest_events
from metering.models import Event
from tests.factories import CustomerFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

COUNT_ON_EVENTS = re.compile(r"count\(.*metering_event", re.IGNORECASE | re.DOTALL)


def _load(org, customer, n, start=0):
    ingest_events(
        organization=org,
        events=[
            {
                "name": ("api.request", "llm.completion")[i % 2],
                "customer_id": str(customer.pk),
                "external_id": f"ev-{i}",
                "metadata": {"i": i},
            }
            for i in range(start, start + n)
        ],
    )


def _unbounded_counts(queries):
    """COUNT queries over metering_event with neither a WHERE nor a LIMIT: full-table counts."""
    out = []
    for query in queries:
        sql = query["sql"]
        if COUNT_ON_EVENTS.search(sql) and " WHERE " not in sql and " LIMIT " not in sql:
            out.append(sql)
    return out


@pytest.fixture
def org_customer():
    org = OrganizationFactory(name="Acme")
    return org, CustomerFactory(organization=org)


URLS = [
    "/admin/metering/event/",
    "/admin/metering/event/?name=api.request",
    "/admin/metering/event/?source=user&period=30d",
    "/admin/metering/event/?q=ev-3",
]


def test_changelist_never_counts_the_whole_table(admin_client, org_customer):
    org, customer = org_customer
    _load(org, customer, 120)
    for url in [*URLS, f"/admin/metering/event/?organization={org.pk}"]:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(url)
        assert response.status_code == 200, url
        assert _unbounded_counts(captured.captured_queries) == [], url
        assert any("metering_event" in q["sql"] for q in captured.captured_queries)


def test_unfiltered_count_uses_the_estimate_when_large(org_customer, monkeypatch):
    org, customer = org_customer
    _load(org, customer, 30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE metering_event")
    monkeypatch.setattr(EstimatedCountPaginator, "cap", 10)
    with CaptureQueriesContext(connection) as captured:
        count = EstimatedCountPaginator(Event.objects.order_by("-timestamp"), 5).count
    assert count == 30  # reltuples after ANALYZE
    sqls = [q["sql"] for q in captured.captured_queries]
    assert not any(COUNT_ON_EVENTS.search(sql) for sql in sqls), sqls
    assert any("reltuples" in sql for sql in sqls)
    # filtered: a capped count, never more than cap + 1
    with CaptureQueriesContext(connection) as captured:
        capped = EstimatedCountPaginator(
            Event.objects.filter(organization=org).order_by("-timestamp"), 5
        ).count
    assert capped == 11
    assert "LIMIT 11" in captured.captured_queries[0]["sql"]


def test_query_count_does_not_grow_with_rows(admin_client, org_customer, monkeypatch):
    from django.contrib import admin

    monkeypatch.setattr(admin.site._registry[Event], "list_per_page", 10)
    org, customer = org_customer
    other = CustomerFactory(organization=org)

    def counts():
        out = {}
        for url in URLS:
            with CaptureQueriesContext(connection) as captured:
                assert admin_client.get(url).status_code == 200
            out[url] = len(captured.captured_queries)
        return out

    _load(org, customer, 5)
    small = counts()
    _load(org, other, 45, start=5)  # 50 events, two customers, several pages
    assert Event.objects.count() == 50
    large = counts()
    assert small == large
    assert max(large.values()) <= 10
    # with 50 rows there are 5 pages of 10: a later page costs the same as the first
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get("/admin/metering/event/?p=3")
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 10
    assert len(captured.captured_queries) == large["/admin/metering/event/"]
