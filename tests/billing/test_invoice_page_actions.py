"""The invoice page's buttons: the list's money actions (mark paid, void, record a payment, retry,
refund) offered on one invoice, only when they apply to its status and the user holds the
action's permission; each goes through a confirmation (or its own form) page and the same
action and service as the list, then back to the invoice."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from billing import subscriptions
from billing.models import Invoice, InvoiceStatus
from core.roles import BILLING_OPERATOR, SUPPORT
from payments.models import OrganizationPayments, Payment, Refund
from tests.billing.conftest import fixed_price

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def manual_collection(settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.PAYMENTS_COLLECTION = "manual"


@pytest.fixture
def invoice(org, make_product, customer) -> Invoice:
    product = make_product(fixed_price(2900), name="Pro")
    subscription = subscriptions.create_subscription(customer=customer, product=product)
    invoice = subscription.invoices.get()
    assert invoice.status == InvoiceStatus.OPEN
    return invoice


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def root() -> Client:
    return login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))


def staff(group: str) -> Client:
    user = get_user_model().objects.create_user(group, f"{group}@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return login(user)


def buttons(client, invoice) -> list[str]:
    """The labels of the action buttons at the top of the invoice's page."""
    page = client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    assert page.status_code == 200
    return re.findall(
        r'<a href="[^"]+/act/[^"]+/" class="ml-action">([^<]+)</a>', page.content.decode()
    )


def act_url(invoice, name: str) -> str:
    return reverse("admin:billing_invoice_act", args=[invoice.pk, name])


def test_buttons_follow_the_status_and_the_role(org, invoice, root):
    support, operator = staff(SUPPORT), staff(BILLING_OPERATOR)
    assert buttons(root, invoice) == ["Mark paid", "Void", "Record payment"]
    # the billing operator holds mark paid, void and record payment; support none
    assert buttons(operator, invoice) == buttons(root, invoice)
    assert buttons(support, invoice) == []
    assert support.get(act_url(invoice, "mark_paid")).status_code == 403
    assert support.post(act_url(invoice, "mark_paid"), {"apply": "1"}).status_code == 403

    # collected by a payment provider: retrying applies too
    OrganizationPayments.objects.create(organization=org, provider="stripe")
    assert buttons(root, invoice) == ["Mark paid", "Void", "Record payment", "Retry payment"]
    OrganizationPayments.objects.filter(organization=org).delete()

    root.post(act_url(invoice, "mark_paid"), {"apply": "1"})
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    # paid: only a refund applies, and only for whoever may refund (not the operator)
    assert buttons(root, invoice) == ["Refund"]
    assert buttons(operator, invoice) == []
    assert operator.get(act_url(invoice, "refund")).status_code == 403

    # refunded in full: nothing left
    root.post(
        act_url(invoice, "refund"),
        {"apply": "1", "amount": "29.00", "reason": "customer_request"},
    )
    assert buttons(root, invoice) == []
    assert root.get(act_url(invoice, "no_such_action")).status_code == 404


def test_mark_paid_is_confirmed_first_and_runs_the_lists_action(invoice, root):
    url = act_url(invoice, "mark_paid")
    confirm = root.get(url)
    body = confirm.content.decode()
    assert confirm.status_code == 200
    assert f"Invoice <strong>{invoice.number}</strong>" in body and "29.00 USD" in body
    assert "nothing is charged" in body
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN  # showing the page changes nothing
    assert root.post(url).status_code == 200  # not confirmed: the page again
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN

    done = root.post(url, {"apply": "1"}, follow=True)
    page = reverse("admin:billing_invoice_change", args=[invoice.pk])
    assert done.redirect_chain == [(page, 302)]
    assert "Marked paid 1 invoice(s)." in done.content.decode()
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    # the list's action records the payment received outside Meterline, as from the list
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.provider, payment.status, payment.amount) == ("manual", "succeeded", 2900)

    # a stale page: the invoice is paid meanwhile; nothing happens, the page says why
    again = root.post(url, {"apply": "1"}, follow=True)
    assert f"{invoice.number}: “Mark paid” does not apply to a paid invoice." in (
        again.content.decode()
    )
    assert Payment.objects.filter(invoice=invoice).count() == 1


def test_void_offers_rebilling_the_fixed_lines(invoice, root):
    confirm = root.get(act_url(invoice, "void")).content.decode()
    assert f'action="{act_url(invoice, "void_rebill_fixed")}"' in confirm
    assert "Void and re-bill its fixed lines too" in confirm
    done = root.post(act_url(invoice, "void"), {"apply": "1"})
    assert done.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.VOID and invoice.voided_at is not None
    assert buttons(root, invoice) == []


def test_record_a_payment_then_refund_from_the_page(invoice, root):
    page = reverse("admin:billing_invoice_change", args=[invoice.pk])
    form = root.get(act_url(invoice, "record_payment"))
    assert form.status_code == 200 and 'value="29.00"' in form.content.decode()

    wrong = root.post(
        act_url(invoice, "record_payment"), {"apply": "1", "amount": "28.99", "reference": "T-1"}
    )
    assert wrong.status_code == 200 and "The amount due is 29.00 USD" in wrong.content.decode()
    assert not Payment.objects.filter(invoice=invoice).exists()

    done = root.post(
        act_url(invoice, "record_payment"), {"apply": "1", "amount": "29.00", "reference": "B-7"}
    )
    assert (done.status_code, done["Location"]) == (302, page)
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.amount, payment.provider_payment_id) == (2900, "B-7")
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID

    form = root.get(act_url(invoice, "refund"))
    assert "29.00 USD left to refund" in form.content.decode()
    done = root.post(
        act_url(invoice, "refund"), {"apply": "1", "amount": "10.00", "reason": "customer_request"}
    )
    assert (done.status_code, done["Location"]) == (302, page)
    (refund,) = Refund.objects.filter(invoice=invoice)
    assert (refund.status, refund.amount) == ("succeeded", 1000)
    assert buttons(root, invoice) == ["Refund"]  # 19.00 USD left
