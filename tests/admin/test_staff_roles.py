"""Staff roles: Support (view-only) can read every admin list and run no action (403); a Billing
operator runs the customer-meter and billing actions but deletes nothing; every action is
checked, not only as superuser."""

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from core.roles import BILLING_OPERATOR, SUPPORT
from customers.services import create_customer
from customers.tokens import create_token
from metering import customer_meters, meters
from metering.models import CustomerMeter

pytestmark = pytest.mark.django_db

ALL = {"conjunction": "and", "clauses": []}


@pytest.fixture
def world(organization):
    from billing import catalog, subscriptions
    from billing.catalog import PriceSpec

    customer = create_customer(organization=organization, email="a@x.io", external_id="a")
    meter = meters.create_meter(
        organization=organization, name="calls", filter=ALL, aggregation={"func": "count"}
    )
    customer_meter = customer_meters.ensure_customer_meter(customer=customer, meter=meter)
    token, _ = create_token(organization_name=organization.name, label="ops")
    product = catalog.create_product(
        organization=organization,
        name="Plan",
        prices=[PriceSpec(amount_type="fixed", price_amount=1000)],
    )
    subscription = subscriptions.create_subscription(customer=customer, product=product)
    invoice = subscription.invoices.get()
    return {
        "customer": customer,
        "meter": meter,
        "customer_meter": customer_meter,
        "token": token,
        "subscription": subscription,
        "invoice": invoice,
    }


def staff_in(django_user_model, group_name: str) -> Client:
    user = django_user_model.objects.create_user(f"{group_name}-user", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group_name))
    client = Client()
    client.force_login(user)
    return client


def actions(world):
    """(changelist URL, action, selected pk, extra POST data of the confirmation step)."""
    return [
        (
            "/admin/metering/customermeter/",
            "grant_credits",
            world["customer_meter"].pk,
            {"apply": "1", "units": "5", "reason": "x"},
        ),
        (
            "/admin/metering/customermeter/",
            "reset_meters",
            world["customer_meter"].pk,
            {"apply": "1", "reason": "x"},
        ),
        ("/admin/customers/apitoken/", "revoke_tokens", world["token"].pk, {"post": "yes"}),
        ("/admin/billing/subscription/", "close_now", world["subscription"].pk, {}),
        (
            "/admin/billing/subscription/",
            "change_product",
            world["subscription"].pk,
            {"apply": "1", "proration_behavior": "prorate"},
        ),
        ("/admin/billing/subscription/", "cancel_at_period_end", world["subscription"].pk, {}),
        ("/admin/billing/subscription/", "revoke_now", world["subscription"].pk, {}),
        ("/admin/billing/invoice/", "mark_paid", world["invoice"].pk, {}),
        ("/admin/billing/invoice/", "void", world["invoice"].pk, {}),
        # deletions last
        ("/admin/customers/customer/", "delete_selected", world["customer"].pk, {"post": "yes"}),
        ("/admin/metering/meter/", "delete_selected", world["meter"].pk, {"post": "yes"}),
    ]


def test_roles_exist_after_migrate():
    support = Group.objects.get(name=SUPPORT)
    operator = Group.objects.get(name=BILLING_OPERATOR)
    assert support.permissions.filter(codename="view_event").exists()
    assert not support.permissions.exclude(codename__startswith="view_").exists()
    assert operator.permissions.filter(codename="grant_credits").exists()
    assert operator.permissions.filter(codename="reset_customer_meter").exists()
    assert not operator.permissions.filter(codename__startswith="delete_").exists()


def test_support_reads_every_list_and_gets_403_for_every_action(django_user_model, world):
    client = staff_in(django_user_model, SUPPORT)
    for url in (
        "/admin/billing/subscription/",
        "/admin/billing/invoice/",
        "/admin/billing/product/",
        "/admin/metering/customermeter/",
        "/admin/metering/meter/",
        "/admin/metering/event/",
        "/admin/customers/customer/",
        "/admin/customers/apitoken/",
    ):
        assert client.get(url).status_code == 200, url
    for url, action, pk, confirm in actions(world):
        for data in ({}, confirm):  # the first step and the confirmed step
            response = client.post(url, {"action": action, "_selected_action": [pk], **data})
            assert response.status_code == 403, (url, action, data)
    numbers = customer_meters.numbers_for(world["meter"], world["customer"])
    assert numbers.credited_units == 0
    assert CustomerMeter.objects.count() == 1
    world["token"].refresh_from_db()
    assert world["token"].revoked is False
    world["subscription"].refresh_from_db()
    world["invoice"].refresh_from_db()
    assert (world["subscription"].status, world["subscription"].cancel_at_period_end) == (
        "active",
        False,
    )
    assert world["invoice"].status == "open"


def test_billing_operator_grants_credits_but_cannot_delete(django_user_model, world):
    client = staff_in(django_user_model, BILLING_OPERATOR)
    url, action, pk, confirm = actions(world)[0]
    response = client.post(url, {"action": action, "_selected_action": [pk], **confirm})
    assert response.status_code == 302
    assert customer_meters.numbers_for(world["meter"], world["customer"]).credited_units == 5
    for url, action, pk, confirm in actions(world)[-2:]:  # deletions
        response = client.post(url, {"action": action, "_selected_action": [pk], **confirm})
        assert response.status_code == 403, (url, action)
    invoice_action = [a for a in actions(world) if a[1] == "mark_paid"][0]
    response = client.post(
        invoice_action[0], {"action": "mark_paid", "_selected_action": [invoice_action[2]]}
    )
    assert response.status_code == 302
    world["invoice"].refresh_from_db()
    assert world["invoice"].status == "paid"
