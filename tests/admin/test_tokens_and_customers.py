"""API tokens (secret shown once, hash only, confirmed and logged revoke) and customers (writes go
through customers.services: creation links earlier events, deletion is soft)."""

import re

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import connection

from customers.models import APIToken, Customer
from metering.ingest import ingest_events
from metering.models import Event
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def _create_token(admin_client, org, name="deploy"):
    response = admin_client.post(
        "/admin/customers/apitoken/add/",
        {"name": name, "organization": org.pk, "expiry_date_0": "", "expiry_date_1": ""},
    )
    assert response.status_code == 200, response.content[:500]
    match = re.search(r'id="api-token-secret"[^>]*value="([^"]+)"', response.content.decode())
    if match is None:
        match = re.search(r'value="([^"]+)"[^>]*id="api-token-secret"', response.content.decode())
    assert match, "secret not on the page"
    return response, match.group(1)


def test_token_secret_shown_once_and_only_hash_stored(admin_client):
    org = OrganizationFactory(name="Acme")
    response, secret = _create_token(admin_client, org)
    assert "no-store" in response["Cache-Control"]
    token = APIToken.objects.get(name="deploy")
    assert token.organization == org
    assert APIToken.objects.get_from_key(secret) == token  # the shown secret works
    prefix, _, body = secret.partition(".")
    assert token.prefix == prefix
    assert token.hashed_key and body not in token.hashed_key and secret != token.hashed_key
    # nowhere in the database in clear (any text column of the token row)
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(t)::text FROM customers_apitoken t")
        assert all(body not in row[0] for row in cursor.fetchall())
    # never again: change page, list, messages on the next page
    for url in (
        f"/admin/customers/apitoken/{token.pk}/change/",
        "/admin/customers/apitoken/",
        "/admin/",
    ):
        assert body not in admin_client.get(url).content.decode()


def test_revoke_is_confirmed_and_logged(admin_client, staff):
    org = OrganizationFactory(name="Acme")
    _, secret = _create_token(admin_client, org)
    token = APIToken.objects.get(name="deploy")
    data = {"action": "revoke_tokens", "_selected_action": [token.pk]}
    confirm = admin_client.post("/admin/customers/apitoken/", data)
    assert confirm.status_code == 200
    assert "Yes, revoke" in confirm.content.decode()
    token.refresh_from_db()
    assert not token.revoked  # nothing happens before confirmation
    done = admin_client.post("/admin/customers/apitoken/", {**data, "post": "yes"})
    assert done.status_code == 302
    token.refresh_from_db()
    assert token.revoked
    assert not APIToken.objects.is_valid(secret)
    entry = LogEntry.objects.get(object_id=str(token.pk), action_flag=CHANGE)
    assert entry.user == staff
    assert "Revoked" in entry.get_change_message()


def test_customer_add_links_earlier_events(admin_client):
    org = OrganizationFactory(name="Acme")
    ingest_events(
        organization=org,
        events=[{"name": "api.request", "external_customer_id": "late", "external_id": "e1"}],
    )
    response = admin_client.post(
        "/admin/customers/customer/add/",
        {
            "organization": org.pk,
            "external_id": "late",
            "email": "Late@Example.com",
            "name": "Late Co",
            "metadata": "{}",
            "billing_address": "null",
            "tax_id": "null",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    customer = Customer.objects.get(external_id="late")
    assert customer.email == "late@example.com"  # the service normalizes
    event = Event.objects.get(external_id="e1")
    assert event.customer_id == customer.pk
    assert customer.first_user_event_at == event.timestamp


def test_customer_change_goes_through_service(admin_client):
    org = OrganizationFactory(name="Acme")
    admin_client.post(
        "/admin/customers/customer/add/",
        {"organization": org.pk, "email": "x@example.com", "metadata": "{}",
         "billing_address": "null", "tax_id": "null"},
    )  # fmt: skip
    customer = Customer.objects.get(email="x@example.com")
    assert customer.external_id is None
    ingest_events(
        organization=org,
        events=[{"name": "api.request", "external_customer_id": "gains", "external_id": "e2"}],
    )
    response = admin_client.post(
        f"/admin/customers/customer/{customer.pk}/change/",
        {"external_id": "gains", "email": "x@example.com", "metadata": "{}",
         "billing_address": "null", "tax_id": "null"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    customer.refresh_from_db()
    assert customer.external_id == "gains" and customer.modified_at is not None
    assert Event.objects.get(external_id="e2").customer_id == customer.pk


def test_customer_delete_is_soft(admin_client):
    org = OrganizationFactory(name="Acme")
    ingest_events(
        organization=org,
        events=[{"name": "api.request", "external_customer_id": "gone", "external_id": "e3"}],
    )
    from customers.services import create_customer

    customer = create_customer(organization=org, email="gone@example.com", external_id="gone")
    page = admin_client.get(f"/admin/customers/customer/{customer.pk}/delete/")
    assert page.status_code == 200 and "soft delete" in page.content.decode()
    response = admin_client.post(
        f"/admin/customers/customer/{customer.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.deleted_at is not None
    assert Event.objects.get(external_id="e3").customer_id == customer.pk  # history kept
    listing = admin_client.get("/admin/customers/customer/?status=deleted").content.decode()
    assert "gone@example.com" in listing
