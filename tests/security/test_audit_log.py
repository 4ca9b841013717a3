"""Staff actions on money leave an audit entry (django-auditlog) naming the staff user, when, and
what changed: mark paid, void, a payment recorded by hand, a refund, a plan change — each done
through the admin's own actions, as staff do. The same services called with an API token leave
no entry (no person acts), and the log is read-only in the admin."""

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse

from billing import catalog, invoices, subscriptions
from billing.catalog import PriceSpec
from billing.models import Invoice, InvoiceStatus, Subscription
from customers.models import Customer
from payments.models import Payment, Refund

pytestmark = pytest.mark.django_db


@pytest.fixture
def manual_collection(settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.PAYMENTS_COLLECTION = "manual"


@pytest.fixture
def ops(manual_collection):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-123456")
    client = Client(REMOTE_ADDR="203.0.113.5")
    client.force_login(user)
    client.user = user
    return client


def product(organization, name: str, amount: int):
    return catalog.create_product(
        organization=organization,
        name=name,
        recurring_interval="month",
        prices=[PriceSpec(amount_type="fixed", price_amount=amount)],
    )


@pytest.fixture
def open_invoice(organization):
    pro = product(organization, "Pro", 2900)
    customer = Customer.objects.create(
        organization=organization, email="ada@example.com", external_id="ada"
    )
    subscription = subscriptions.create_subscription(customer=customer, product=pro)
    invoice = Invoice.objects.get(subscription=subscription)
    assert invoice.status == InvoiceStatus.OPEN
    return invoice


def invoice_action(client, action: str, invoice, **data):
    response = client.post(
        reverse("admin:billing_invoice_changelist"),
        {"action": action, "_selected_action": [str(invoice.pk)], **data},
    )
    assert response.status_code == 302, response.content[:500]


def entries_for(instance) -> list[LogEntry]:
    return list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(instance), object_pk=str(instance.pk)
        ).order_by("timestamp")
    )


def assert_by_ops(entry: LogEntry, ops, action: str) -> None:
    assert entry.actor == ops.user
    assert entry.actor_email == "ops@example.com"
    assert entry.remote_addr == "203.0.113.5"
    assert entry.additional_data == {"action": action}
    assert entry.timestamp is not None


def test_mark_paid(ops, open_invoice):
    invoice_action(ops, "mark_paid", open_invoice)
    (entry,) = entries_for(open_invoice)
    assert_by_ops(entry, ops, "mark paid")
    assert entry.action == LogEntry.Action.UPDATE
    assert entry.changes == {"status": ["open", "paid"]}


def test_void(ops, open_invoice):
    invoice_action(ops, "void_rebill_fixed", open_invoice)
    (entry,) = entries_for(open_invoice)
    assert_by_ops(entry, ops, "void")
    assert entry.changes == {"status": ["open", "void"], "rebill_fixed": [None, "True"]}


def test_manual_payment(ops, open_invoice):
    invoice_action(
        ops, "record_payment", open_invoice, apply="1", amount="29.00", reference="BANK-7"
    )
    payment = Payment.objects.get(invoice=open_invoice, provider="manual")
    (entry,) = entries_for(payment)
    assert_by_ops(entry, ops, "manual payment")
    assert entry.action == LogEntry.Action.CREATE
    assert entry.changes == {
        "invoice": [None, open_invoice.number],
        "amount": [None, "29.00 USD"],
        "reference": [None, "BANK-7"],
    }


def test_refund(ops, open_invoice):
    invoice_action(ops, "mark_paid", open_invoice)
    invoice_action(
        ops, "refund", open_invoice, apply="1", amount="10.00", reason="customer_request"
    )
    refund = Refund.objects.get(invoice=open_invoice)
    assert (refund.status, refund.amount) == ("succeeded", 1000)
    (entry,) = entries_for(refund)
    assert_by_ops(entry, ops, "refund")
    assert entry.action == LogEntry.Action.CREATE
    assert entry.changes == {
        "invoice": [None, open_invoice.number],
        "amount": [None, "10.00 USD"],
        "reason": [None, "customer_request"],
        "revoke_benefits": [None, "False"],
    }


@pytest.mark.parametrize("behavior", ["prorate", "next_period"])
def test_plan_change(ops, organization, open_invoice, behavior):
    subscription = Subscription.objects.get(pk=open_invoice.subscription_id)
    pro = subscription.product
    team = product(organization, "Team", 9900)
    response = ops.post(
        reverse("admin:billing_subscription_changelist"),
        {
            "action": "change_product",
            "_selected_action": [str(subscription.pk)],
            "apply": "1",
            "product": str(team.pk),
            "proration_behavior": behavior,
        },
    )
    assert response.status_code == 302, response.content[:500]
    (entry,) = entries_for(subscription)
    assert_by_ops(entry, ops, "plan change")
    changed = "product" if behavior == "prorate" else "pending_product"
    before = f"Pro ({pro.pk})" if behavior == "prorate" else None
    assert entry.changes == {
        changed: [before, f"Team ({team.pk})"],
        "proration_behavior": [None, behavior],
    }


def test_api_token_actions_leave_no_entry(api, manual_collection, open_invoice):
    response = api.post(f"/v1/orders/{open_invoice.pk}/mark-paid")
    assert response.status_code == 200, response.content
    open_invoice.refresh_from_db()
    assert open_invoice.status == InvoiceStatus.PAID
    assert LogEntry.objects.count() == 0


def test_nothing_is_recorded_outside_a_request_after_a_staff_one(ops, open_invoice):
    """A worker or command calling the same service after a staff request in this thread: no
    entry, and none in that staff user's name."""
    assert ops.get(reverse("admin:billing_invoice_changelist")).status_code == 200
    invoices.void(open_invoice)
    open_invoice.refresh_from_db()
    assert open_invoice.status == InvoiceStatus.VOID
    assert LogEntry.objects.count() == 0


def test_the_log_is_listed_and_read_only_in_the_admin(ops, open_invoice):
    invoice_action(ops, "mark_paid", open_invoice)
    (entry,) = LogEntry.objects.all()
    listing = ops.get(reverse("admin:auditlog_logentry_changelist"))
    assert listing.status_code == 200
    html = listing.content.decode()
    assert open_invoice.number in html and "ops" in html
    detail = ops.get(reverse("admin:auditlog_logentry_change", args=[entry.pk]))
    assert detail.status_code == 200
    assert 'type="submit" value="Save"' not in detail.content.decode()
    assert ops.get(reverse("admin:auditlog_logentry_add")).status_code == 403
    assert ops.post(reverse("admin:auditlog_logentry_delete", args=[entry.pk])).status_code == 403
    assert LogEntry.objects.count() == 1
