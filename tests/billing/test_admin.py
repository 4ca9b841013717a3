"""Billing admin: pages render with a bounded number of queries, the tier editor round-trips,
actions need their permissions."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from billing import subscriptions
from billing.admin.catalog import TiersField
from billing.models import Invoice, Subscription
from customers.models import Customer
from tests.billing.conftest import at, fixed_price, unit_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client():
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def catalog_with_subscriptions(org, make_product, api_calls, send):
    product = make_product(fixed_price(1500), unit_price(api_calls, "0.5"), name="Pro")
    subs = []
    for n in range(8):
        customer = Customer.objects.create(
            organization=org, email=f"a{n}@example.com", external_id=f"a{n}"
        )
        subs.append(subscriptions.create_subscription(customer=customer, product=product))
    return product, subs


def test_lists_and_change_pages_render_without_n_plus_one(
    superuser_client, catalog_with_subscriptions, django_assert_max_num_queries
):
    product, subs = catalog_with_subscriptions
    for name in ("product", "subscription", "invoice", "discount", "taxrate", "benefit"):
        with django_assert_max_num_queries(12):
            response = superuser_client.get(reverse(f"admin:billing_{name}_changelist"))
        assert response.status_code == 200, name
    response = superuser_client.get(reverse("admin:billing_subscription_change", args=[subs[0].pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Upcoming invoice" in body and "15.00" in body
    assert "E-12" not in body and "E+" not in body  # quantities without exponents
    invoice = Invoice.objects.filter(subscription=subs[0]).first()
    response = superuser_client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    assert response.status_code == 200 and invoice.number in response.content.decode()
    response = superuser_client.get(reverse("admin:billing_product_change", args=[product.pk]))
    assert response.status_code == 200


def test_tier_editor_round_trips():
    field = TiersField()
    value = field.clean("volume\n100 | 200 | 1000\n200 | 100\n* | 50 | 5000")
    assert value == {
        "type": "volume",
        "tiers": [
            {"bound": 100, "unit_amount": "200", "flat_amount": 1000},
            {"bound": 200, "unit_amount": "100"},
            {"bound": None, "unit_amount": "50", "flat_amount": 5000},
        ],
    }
    assert field.clean(field.prepare_value(value)) == value
    with pytest.raises(Exception, match="greater than 100"):
        field.clean("100 | 1\n50 | 1\n* | 1")


def test_actions_need_their_permissions(org, catalog_with_subscriptions):
    _, subs = catalog_with_subscriptions
    user = get_user_model().objects.create_user(
        "clerk", "c@example.com", "pw-123456", is_staff=True
    )
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_invoice", "change_invoice"])
    )
    client = Client()
    client.force_login(user)
    invoice = Invoice.objects.filter(subscription=subs[0]).get()
    url = reverse("admin:billing_invoice_changelist")
    response = client.post(url, {"action": "mark_paid", "_selected_action": [invoice.pk]})
    invoice.refresh_from_db()
    assert invoice.status == "open"  # no permission: the action isn't offered
    user.user_permissions.add(Permission.objects.get(codename="mark_paid_invoice"))
    client.force_login(get_user_model().objects.get(pk=user.pk))
    response = client.post(url, {"action": "mark_paid", "_selected_action": [invoice.pk]})
    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == "paid"


def test_admin_creates_backdated_subscriptions_and_closes_them_now(
    org, superuser_client, make_product, customer
):
    product = make_product(fixed_price(700))
    response = superuser_client.post(
        reverse("admin:billing_subscription_add"),
        {
            "customer": customer.pk,
            "product": product.pk,
            "started_at_0": "2024-01-01",
            "started_at_1": "00:00:00",
            "metadata": "{}",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    subscription = Subscription.objects.get(customer=customer)
    assert subscription.started_at == at("2024-01-01T00:00:00")
    superuser_client.post(
        reverse("admin:billing_subscription_changelist"),
        {"action": "close_now", "_selected_action": [subscription.pk]},
    )
    subscription.refresh_from_db()
    assert subscription.invoices.count() > 20  # every month since Jan 2024 closed


def test_admin_changes_the_product_through_a_confirmation_page(
    org, superuser_client, make_product, customer
):
    basic = make_product(
        fixed_price(2900), name="Basic", recurring_interval="day", recurring_interval_count=30
    )
    pro = make_product(
        fixed_price(9900), name="Pro", recurring_interval="day", recurring_interval_count=30
    )
    subscription = subscriptions.create_subscription(customer=customer, product=basic)
    url = reverse("admin:billing_subscription_changelist")
    page = superuser_client.post(
        url, {"action": "change_product", "_selected_action": [subscription.pk]}
    )
    assert page.status_code == 200 and "next_period" in page.content.decode()
    response = superuser_client.post(
        url,
        {
            "action": "change_product",
            "_selected_action": [subscription.pk],
            "apply": "1",
            "product": pro.pk,
            "proration_behavior": "invoice",
        },
    )
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.product_id == pro.pk
    update = subscription.invoices.get(billing_reason="subscription_update")
    # changed seconds after the start: almost the whole difference, 99.00 − 29.00
    assert Decimal("69.90") <= update.total.amount <= Decimal("70.00")


def test_invoice_page_links_its_pdf_and_support_staff_can_open_it(
    superuser_client, catalog_with_subscriptions
):
    _product, subs = catalog_with_subscriptions
    invoice = Invoice.objects.get(subscription=subs[0])
    pdf_url = reverse("admin:billing_invoice_pdf", args=[invoice.pk])
    page = superuser_client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    body = page.content.decode()
    assert f'href="{pdf_url}"' in body
    response = superuser_client.get(pdf_url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'inline; filename="{invoice.number}.pdf"'
    assert response.content.startswith(b"%PDF-")

    anonymous = Client().get(pdf_url)
    assert anonymous.status_code == 302  # to the admin login
