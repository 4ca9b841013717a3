"""Payments in the admin, through the Django test client and the real `stripe` library against
localstripe: the invoice page's payments and credit notes, "Retry payment now", "Record
payment", billing's "Mark paid" recording a manual payment, the dunning list, an organization's
payment settings and a customer's method and balance; each action needs its permission."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing import balance, catalog, subscriptions
from billing.catalog import PriceSpec
from billing.models import Invoice, InvoiceStatus, SubscriptionStatus
from billing.money import to_minor
from core.roles import BILLING_OPERATOR
from customers.models import Customer
from payments import collection, methods
from payments.configuration import resolved
from payments.models import (
    CollectionState,
    InvoiceCollection,
    OrganizationPayments,
    Payment,
    Refund,
)

pytestmark = pytest.mark.django_db

GOOD, DECLINED = "4242424242424242", "4000000000000341"


def staff_client(username: str, *codenames: str, group: str | None = None) -> Client:
    user = get_user_model().objects.create_user(
        username, f"{username}@example.com", "pw-123456", is_staff=True
    )
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    if group:
        user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def root(db) -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def pro(organization):
    return catalog.create_product(
        organization=organization,
        name="Pro",
        recurring_interval="month",
        prices=[PriceSpec(amount_type="fixed", price_amount=2900)],
    )


def subscribe(organization, pro, name: str, card: str | None):
    customer = Customer.objects.create(
        organization=organization, email=f"{name}@example.com", external_id=name
    )
    if card:
        methods.set_default_method(customer, card)
    subscription = subscriptions.create_subscription(customer=customer, product=pro)
    invoice = Invoice.objects.get(subscription=subscription)
    return customer, subscription, invoice


def act(client, action: str, invoice, **data):
    return client.post(
        reverse("admin:billing_invoice_changelist"),
        {"action": action, "_selected_action": [str(invoice.pk)], **data},
    )


def test_invoice_page_shows_its_payments_and_collection(root, organization, pro, stripe_settings):
    _, _, invoice = subscribe(organization, pro, "ada", stripe_settings.card(GOOD))
    payment = collection.attempt(invoice.pk)
    assert (payment.status, payment.amount) == ("succeeded", 2900)
    response = root.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Stripe visa •••• 4242" in body and "29.00 USD" in body
    assert "Paid; 1 attempt(s), 0 declined" in body
    listing = root.get(reverse("admin:billing_invoice_changelist")).content.decode()
    assert "Retry payment now" in listing and "Record payment (manual)" in listing


def test_retry_payment_now_collects_after_a_new_card_and_needs_its_permission(
    root, organization, pro, stripe_settings
):
    customer, subscription, invoice = subscribe(
        organization, pro, "bob", stripe_settings.card(DECLINED)
    )
    failed = collection.attempt(invoice.pk)
    assert (failed.status, failed.decline_reason) == ("failed", "card_declined")
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.PAST_DUE

    # the dunning list shows it with the amount at risk, without an unbounded count
    with CaptureQueriesContext(connection) as queries:
        response = root.get(reverse("admin:payments_invoicecollection_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert invoice.number in body and "29.00 USD" in body and "past_due" in body
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts

    methods.set_default_method(customer, stripe_settings.card(GOOD))
    clerk = staff_client("clerk", "view_invoice", "mark_paid_invoice")
    assert act(clerk, "retry_payment", invoice).status_code == 403
    assert Payment.objects.filter(invoice=invoice).count() == 1

    operator = staff_client("op", group=BILLING_OPERATOR)
    response = act(operator, "retry_payment", invoice)
    assert response.status_code == 302
    retried = Payment.objects.get(invoice=invoice, attempt=2)
    assert (retried.status, retried.amount, retried.trigger) == ("succeeded", 2900, "retry_admin")
    invoice.refresh_from_db()
    subscription.refresh_from_db()
    assert (invoice.status, subscription.status) == (InvoiceStatus.PAID, SubscriptionStatus.ACTIVE)
    assert InvoiceCollection.objects.get(pk=invoice.pk).state == CollectionState.PAID
    # nothing left to collect: refused with a message, no new attempt
    response = act(operator, "retry_payment", invoice)
    assert response.status_code == 302
    assert Payment.objects.filter(invoice=invoice).count() == 2
    assert (
        len(stripe_settings.succeeded_charges(customer.billing_profile.provider_customer_id)) == 1
    )
    # not failing any more: gone from the dunning list (still under "all")
    body = root.get(reverse("admin:payments_invoicecollection_changelist")).content.decode()
    assert invoice.number not in body
    body = root.get(
        reverse("admin:payments_invoicecollection_changelist") + "?collection=all"
    ).content.decode()
    assert invoice.number in body


def test_record_payment_for_the_amount_due(root, organization, pro, settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.PAYMENTS_COLLECTION = "manual"
    _, _, invoice = subscribe(organization, pro, "cy", None)
    assert invoice.status == InvoiceStatus.OPEN

    support = staff_client("viewer", "view_invoice", "retry_payment")
    assert act(support, "record_payment", invoice).status_code == 403

    form = act(root, "record_payment", invoice)
    assert form.status_code == 200
    assert 'value="29.00"' in form.content.decode()

    wrong = act(root, "record_payment", invoice, apply="1", amount="28.99", reference="T-1")
    assert wrong.status_code == 200
    assert "The amount due is 29.00 USD" in wrong.content.decode()
    assert not Payment.objects.filter(invoice=invoice).exists()

    bad = act(root, "record_payment", invoice, apply="1", amount="29.001", reference="T-1")
    assert bad.status_code == 200 and not Payment.objects.exists()

    done = act(root, "record_payment", invoice, apply="1", amount="29.00", reference=" BANK-7 ")
    assert done.status_code == 302
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.provider, payment.status, payment.amount, payment.provider_payment_id) == (
        "manual",
        "succeeded",
        2900,
        "BANK-7",
    )
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID and invoice.paid_at is not None

    again = act(root, "record_payment", invoice, apply="1", amount="29.00", reference="X")
    assert again.status_code == 200
    assert f"{invoice.number} is paid: there is nothing to pay" in again.content.decode()
    assert Payment.objects.filter(invoice=invoice).count() == 1


def test_billing_mark_paid_records_a_manual_payment_and_recovers(
    root, organization, pro, stripe_settings
):
    _, subscription, invoice = subscribe(organization, pro, "dee", stripe_settings.card(DECLINED))
    collection.attempt(invoice.pk)
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.PAST_DUE

    response = act(root, "mark_paid", invoice)
    assert response.status_code == 302
    invoice.refresh_from_db()
    subscription.refresh_from_db()
    assert (invoice.status, subscription.status) == (InvoiceStatus.PAID, SubscriptionStatus.ACTIVE)
    manual = Payment.objects.get(invoice=invoice, provider="manual")
    assert (manual.attempt, manual.status, manual.amount) == (2, "succeeded", 2900)
    row = InvoiceCollection.objects.get(pk=invoice.pk)
    assert (row.state, row.next_attempt_at, row.attempts) == (CollectionState.PAID, None, 2)
    # the scheduled job finds nothing more to do for it
    assert collection.collect_due().attempted == 0


def test_organization_payment_settings_are_editable(root, organization, stripe_settings):
    assert resolved(organization.pk)[:2] == ("stripe", "automatic")
    response = root.post(
        reverse("admin:payments_organizationpayments_add"),
        {
            "organization": str(organization.pk),
            "provider": "stripe",
            "collection": "send_invoice",
            "days_until_due": "14",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert resolved(organization.pk) == ("stripe", "send_invoice", 14)
    settings_row = OrganizationPayments.objects.get(organization=organization)
    response = root.post(
        reverse("admin:payments_organizationpayments_change", args=[settings_row.pk]),
        {"provider": "manual", "collection": "", "days_until_due": ""},
    )
    assert response.status_code == 302
    assert resolved(organization.pk) == ("manual", "manual", 30)


def test_customer_page_shows_default_method_and_balance(root, organization, stripe_settings):
    customer = Customer.objects.create(organization=organization, email="eve@example.com")
    body = root.get(reverse("admin:customers_customer_change", args=[customer.pk])).content
    assert "No payment method." in body.decode()
    methods.set_default_method(customer, stripe_settings.card(GOOD))
    balance.credit(customer.pk, "USD", 1250)
    body = root.get(reverse("admin:customers_customer_change", args=[customer.pk])).content
    text = body.decode()
    assert "Default method: visa •••• 4242, expires 12/2034" in text
    assert "12.50 USD" in text


def test_refund_needs_its_own_permission_and_issues_credit_notes(
    root, organization, pro, stripe_settings
):
    customer, _, invoice = subscribe(organization, pro, "fay", stripe_settings.card(GOOD))
    collection.attempt(invoice.pk)
    # neither a billing operator nor a user with every other payments permission may refund
    operator = staff_client("op", group=BILLING_OPERATOR)
    assert act(operator, "refund", invoice).status_code == 403
    clerk = staff_client("clerk", "view_invoice", "retry_payment", "record_payment")
    assert act(clerk, "refund", invoice).status_code == 403
    refunder = staff_client("refunder", "view_invoice", "refund_invoice")
    page = act(refunder, "refund", invoice)
    assert page.status_code == 200 and "29.00 USD left to refund" in page.content.decode()

    done = act(refunder, "refund", invoice, apply="1", amount="10.00", reason="customer_request")
    assert done.status_code == 302
    (first,) = Refund.objects.filter(invoice=invoice)
    assert (first.status, first.amount, first.credit_note.number) == (
        "succeeded",
        1000,
        "ACME-CN-0001",
    )
    too_much = act(refunder, "refund", invoice, apply="1", amount="19.05", reason="duplicate")
    assert too_much.status_code == 200
    assert "more than what is left to refund: 1900" in too_much.content.decode()
    assert Refund.objects.filter(invoice=invoice).count() == 1
    rest = act(refunder, "refund", invoice, apply="1", amount="19.00", reason="duplicate")
    assert rest.status_code == 302
    invoice.refresh_from_db()
    assert to_minor(invoice.refunded_amount) == 2900
    refunded = stripe_settings.client.v1.refunds.list(params={"limit": 10}).data
    assert sorted(r.amount for r in refunded) == [1000, 1900]

    body = root.get(reverse("admin:billing_invoice_change", args=[invoice.pk])).content.decode()
    assert "ACME-CN-0001" in body and "ACME-CN-0002" in body
    assert "10.00 USD (tax 0.00 USD)" in body and "19.00 USD (tax 0.00 USD)" in body


def test_api_mark_paid_records_a_manual_payment(api, organization, pro, settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.PAYMENTS_COLLECTION = "manual"
    _, _, invoice = subscribe(organization, pro, "gus", None)
    response = api.post(f"/v1/orders/{invoice.pk}/mark-paid")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "paid"
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.provider, payment.status, payment.amount, payment.attempt) == (
        "manual",
        "succeeded",
        2900,
        1,
    )
    assert not InvoiceCollection.objects.filter(pk=invoice.pk).exists()
    # not a Polar payment (its processor is Stripe only): the order is paid, the list is empty
    listed = api.get(f"/v1/payments/?order_id={invoice.pk}")
    assert listed.status_code == 200 and listed.json()["items"] == []
    assert api.get(f"/v1/payments/{payment.pk}").status_code == 404
