"""Every admin page opens for staff and stays closed to everyone else; events are view-only."""

import re

import pytest
from django.contrib import admin
from django.test import RequestFactory

from customers.services import create_customer
from metering.ingest import ingest_events
from metering.models import Event
from tests.factories import CustomerFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def data():
    org = OrganizationFactory(name="Acme")
    customer = create_customer(organization=org, email="a@example.com", external_id="cust_a")
    ingest_events(
        organization=org,
        events=[
            {"name": "api.request", "external_customer_id": "cust_a", "external_id": "parent-1"},
            {
                "name": "llm.completion",
                "external_customer_id": "cust_a",
                "external_id": "child-1",
                "parent_id": "parent-1",
                "metadata": {"model": "gpt-4o", "total_tokens": 12},
            },
        ],
    )
    from customers.tokens import create_token

    token, _ = create_token(organization_name="Acme", label="ci")
    parent = Event.objects.get(external_id="parent-1")
    child = Event.objects.get(external_id="child-1")
    return {"org": org, "customer": customer, "token": token, "parent": parent, "child": child}


def urls(data):
    org, customer, token = data["org"], data["customer"], data["token"]
    return [
        "/admin/",
        "/admin/customers/organization/",
        "/admin/customers/organization/add/",
        f"/admin/customers/organization/{org.pk}/change/",
        "/admin/customers/apitoken/",
        "/admin/customers/apitoken/add/",
        f"/admin/customers/apitoken/{token.pk}/change/",
        "/admin/customers/customer/",
        "/admin/customers/customer/add/",
        f"/admin/customers/customer/{customer.pk}/change/",
        f"/admin/customers/customer/?organization__id__exact={org.pk}&status=active",
        "/admin/customers/customer/?q=cust_a",
        "/admin/metering/event/",
        "/admin/metering/event/?p=1",
        f"/admin/metering/event/?organization={org.pk}",
        "/admin/metering/event/?name=api.request&source=user&period=7d",
        f"/admin/metering/event/?customer={customer.pk}",
        "/admin/metering/event/?q=cust_a",
        f"/admin/metering/event/?parent={data['parent'].pk}",
        f"/admin/metering/event/{data['parent'].pk}/change/",
        f"/admin/metering/event/{data['child'].pk}/change/",
        "/admin/metering/eventname/",
    ]


def test_staff_opens_every_page(admin_client, data):
    for url in urls(data):
        response = admin_client.get(url)
        assert response.status_code == 200, (url, response.status_code)


def test_non_staff_and_anonymous_are_sent_to_login(plain_client, client, data):
    for url in urls(data):
        for c in (plain_client, client):
            response = c.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url


def test_event_admin_is_read_only(admin_client, staff, data):
    event = data["parent"]
    request = RequestFactory().get("/")
    request.user = staff
    model_admin = admin.site._registry[Event]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, event)
    assert not model_admin.has_delete_permission(request, event)
    assert "delete_selected" not in model_admin.get_actions(request)

    assert admin_client.get("/admin/metering/event/add/").status_code == 403
    assert admin_client.get(f"/admin/metering/event/{event.pk}/delete/").status_code == 403
    response = admin_client.post(f"/admin/metering/event/{event.pk}/change/", {"name": "changed"})
    assert response.status_code == 403
    response = admin_client.post(
        "/admin/metering/event/",
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert Event.objects.filter(pk=event.pk, name="api.request").exists()
    changelist = admin_client.get("/admin/metering/event/").content.decode()
    assert 'name="_selected_action"' not in changelist
    assert "Add event" not in changelist


def test_event_page_shows_metadata_parent_and_children(admin_client, data):
    parent, child = data["parent"], data["child"]
    assert child.parent_id == parent.pk
    page = admin_client.get(f"/admin/metering/event/{child.pk}/change/").content.decode()
    assert f"/admin/metering/event/{parent.pk}/change/" in page
    assert "&quot;total_tokens&quot;: 12" in page  # pretty-printed JSON
    page = admin_client.get(f"/admin/metering/event/{parent.pk}/change/").content.decode()
    assert f"/admin/metering/event/{child.pk}/change/" in page


def test_event_filters_narrow_the_list(admin_client, data):
    other = CustomerFactory(organization=data["org"], external_id="cust_b")
    ingest_events(
        organization=data["org"],
        events=[{"name": "storage.upload", "customer_id": str(other.pk), "external_id": "up-1"}],
    )
    page = admin_client.get("/admin/metering/event/?name=storage.upload").content.decode()
    assert "up-1" in page and "parent-1" not in page
    page = admin_client.get(f"/admin/metering/event/?customer={other.pk}").content.decode()
    assert "up-1" in page and "child-1" not in page
    page = admin_client.get("/admin/metering/event/?q=child-1").content.decode()
    assert "child-1" in page and "parent-1" not in page
    # search by external customer id finds events sent with customer_id too
    page = admin_client.get("/admin/metering/event/?q=cust_b").content.decode()
    assert "up-1" in page and "child-1" not in page


def test_customer_page_lists_recent_events_bounded(admin_client, data):
    customer = data["customer"]
    ingest_events(
        organization=data["org"],
        events=[
            {"name": "api.request", "customer_id": str(customer.pk), "external_id": f"bulk-{i}"}
            for i in range(30)
        ],
    )
    page = admin_client.get(f"/admin/customers/customer/{customer.pk}/change/").content.decode()
    assert len(re.findall(r"/admin/metering/event/[0-9a-f-]{36}/change/", page)) == 20
    assert f"/admin/metering/event/?customer={customer.pk}" in page


def test_event_page_shows_matched_meters_with_values(admin_client, data):
    from metering.models import Meter

    def meter(name, value, aggregation):
        clause = {"property": "name", "operator": "eq", "value": value}
        return Meter.objects.create(
            organization=data["org"],
            name=name,
            filter={"conjunction": "and", "clauses": [clause]},
            aggregation=aggregation,
        )

    meter("Tokens", "llm.completion", {"func": "sum", "property": "total_tokens"})
    meter("Models", "llm.completion", {"func": "unique", "property": "model"})
    meter("Requests", "api.request", {"func": "count"})
    page = admin_client.get(f"/admin/metering/event/{data['child'].pk}/change/").content.decode()
    section = page[page.index("Matched meters") :]
    assert "Tokens" in section and "<td>12</td>" in section
    assert "Models" in section and "<td>gpt-4o</td>" in section
    assert "Requests" not in section
