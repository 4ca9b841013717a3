"""A staff grant of credits in the admin leaves an audit entry naming the staff user, the address
and what was granted; grants by packs and by code outside a staff request leave none."""

from datetime import UTC, datetime

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from billing import credits
from billing.models import CreditGrant, CreditSource
from customers.services import create_customer
from metering import meters
from tests.security.test_audit_log import assert_by_ops, entries_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops():
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-123456")
    client = Client(REMOTE_ADDR="203.0.113.5")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def calls(organization):
    return meters.create_meter(
        organization=organization,
        name="API calls",
        filter={"conjunction": "and", "clauses": []},
        aggregation={"func": "count"},
    )


@pytest.fixture
def customer(organization):
    return create_customer(organization=organization, email="ada@example.com", external_id="ada")


def test_a_staff_grant_in_the_admin_names_the_staff_user(ops, calls, customer):
    response = ops.post(
        reverse("admin:billing_creditgrant_add"),
        {
            "customer": customer.pk,
            "meter": calls.pk,
            "units": 250,
            "expires_at_0": "2099-01-31",
            "expires_at_1": "12:00:00",
            "reason": "Goodwill",
        },
    )
    assert response.status_code == 302, response.content[:500]
    (grant,) = CreditGrant.objects.all()
    (entry,) = entries_for(grant)
    assert_by_ops(entry, ops, "credit grant")
    assert entry.action == LogEntry.Action.CREATE
    assert grant.expires_at == datetime(2099, 1, 31, 12, tzinfo=UTC)
    assert entry.changes == {
        "customer": [None, "ada@example.com"],
        "meter": [None, "API calls"],
        "units": [None, "250"],
        "expires_at": [None, "2099-01-31T12:00:00+00:00"],
        "reason": [None, "Goodwill"],
    }


def test_grants_outside_a_staff_request_leave_no_entry(ops, calls, customer):
    # a staff request served first in this thread: its user is not named afterwards
    assert ops.get(reverse("admin:billing_creditgrant_changelist")).status_code == 200
    credits.grant(customer=customer, meter=calls, units=100, reason="script")
    credits.grant(customer=customer, meter=calls, units=1000, source=CreditSource.PACK)
    assert CreditGrant.objects.count() == 2
    assert LogEntry.objects.count() == 0
