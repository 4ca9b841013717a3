"""The billing dashboard: exact figures from the set-based queries, and the admin page rendered
with a bounded number of queries."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import cycles, dashboard, invoices, subscriptions
from billing.models import Invoice
from customers.models import Customer, Organization
from tests.billing.conftest import at, fixed_price, unit_price

pytestmark = pytest.mark.django_db

NOW = at("2024-03-15T12:00:00")


@pytest.fixture
def book(org, make_product, customer, api_calls, send):
    """Ada: Pro ($29/month + 2 cents a call) since Jan 1, 100 calls on Jan 10, 50 on Feb 5,
    closed through February. Bob: Yearly ($120/year) since Feb 10, paid. Each invoice is dated
    as if it had been finalized on time (the close runs here all at once)."""
    pro = make_product(fixed_price(2900), unit_price(api_calls, 2), name="Pro")
    yearly = make_product(fixed_price(12000), name="Yearly", recurring_interval="year")
    ada = subscriptions.create_subscription(
        customer=customer, product=pro, started_at=at("2024-01-01T00:00:00")
    )
    send("api.call", "ada", "2024-01-10T08:00:00", count=100)
    send("api.call", "ada", "2024-02-05T08:00:00", count=50)
    cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    bob = Customer.objects.create(organization=org, email="bob@example.com", external_id="bob")
    subscriptions.create_subscription(
        customer=bob, product=yearly, started_at=at("2024-02-10T00:00:00")
    )
    for invoice in Invoice.objects.all():
        on_time = invoice.period_end + timedelta(hours=1)
        if invoice.billing_reason == "subscription_create":
            on_time = invoice.period_start
        Invoice.objects.filter(pk=invoice.pk).update(finalized_at=on_time)
    invoices.mark_paid(Invoice.objects.get(number="ACME-0001"))
    invoices.mark_paid(Invoice.objects.get(product=yearly))
    return ada


def test_figures_are_exact(org, book, settings, send):
    assert [
        (r.month.date(), r.currency, r.invoiced, r.paid)
        for r in dashboard.revenue_by_month(org, now=NOW)
    ] == [
        (date(2024, 1, 1), "USD", Decimal("29.00"), Decimal("29.00")),
        (date(2024, 2, 1), "USD", Decimal("151.00"), Decimal("120.00")),  # 31 + 120
        (date(2024, 3, 1), "USD", Decimal("30.00"), Decimal("0")),
    ]
    assert [
        (r.product, r.currency, r.invoiced, r.invoices)
        for r in dashboard.revenue_by_product(org, now=NOW)
    ] == [("Yearly", "USD", Decimal("120.00"), 1), ("Pro", "USD", Decimal("90.00"), 3)]
    # $29 a month + $120 a year = $29 + $10
    assert dashboard.mrr(org, now=NOW) == {"USD": Decimal("39.00")}

    settings.BILLING_INVOICE_DUE_DAYS = 20  # overdue: finalized before Feb 24 12:00
    ((row),) = dashboard.receivables(org, now=NOW)
    assert (row.open_count, row.open_total, row.overdue_count, row.overdue_total) == (
        2,
        Decimal("61.00"),
        1,
        Decimal("31.00"),
    )
    assert [i.number for i in dashboard.oldest_overdue(org, now=NOW)] == ["ACME-0002"]

    read = dashboard.meter_usage(org, now=NOW, days=90)
    (calls,) = read.series
    assert calls.values == {date(2024, 1, 10): Decimal(100), date(2024, 2, 5): Decimal(50)}
    # the window starts at the beginning of the day 89 days back: Jan 10 falls out at 60 days
    (calls,) = dashboard.meter_usage(org, now=NOW, days=60).series
    assert calls.values == {date(2024, 2, 5): Decimal(50)}
    # read again within five minutes: the cached figures, with the time they were read
    send("api.call", "ada", "2024-02-05T10:00:00", count=7)
    again = dashboard.meter_usage(org, now=NOW + timedelta(minutes=4), days=90)
    assert (again.as_of, again.series[0].values[date(2024, 2, 5)]) == (NOW, Decimal(50))


def test_backdated_invoices_count_in_the_months_they_bill(org, book):
    """All of the book's invoices written on March 15 (a subscription backdated from another
    system): revenue is still per invoice date (a cycle invoice at its period's end, a first
    invoice at the subscription's start), not all in March."""
    Invoice.objects.update(finalized_at=NOW - timedelta(hours=1))
    assert [(r.month.date(), r.invoiced) for r in dashboard.revenue_by_month(org, now=NOW)] == [
        (date(2024, 1, 1), Decimal("29.00")),
        (date(2024, 2, 1), Decimal("151.00")),
        (date(2024, 3, 1), Decimal("30.00")),
    ]
    # the rule in Python agrees with the SQL
    dates = {i.number: dashboard.invoice_date(i).date() for i in Invoice.objects.all()}
    assert dates == {
        "ACME-0001": date(2024, 1, 1),  # Ada's first invoice: her start
        "ACME-0002": date(2024, 2, 1),  # January's cycle: its end
        "ACME-0003": date(2024, 3, 1),  # February's cycle
        "ACME-0004": date(2024, 2, 10),  # Bob's first invoice
    }
    # an invoice is never dated after it was finalized
    early = Invoice.objects.get(number="ACME-0003")
    early.finalized_at = at("2024-02-20T00:00:00")
    assert dashboard.invoice_date(early) == at("2024-02-20T00:00:00")


def test_revoked_and_trialing_subscriptions_are_not_recurring(org, book, make_product):
    subscriptions.revoke(book, at=at("2024-03-10T00:00:00"))
    assert dashboard.mrr(org, now=NOW) == {"USD": Decimal("10.00")}


def test_admin_dashboard_renders_svg_charts_with_bounded_queries(
    org, book, send, django_assert_max_num_queries
):
    now = timezone.now()
    # every invoice dated two hours ago (their periods end, or the first ones start, then)
    earlier = now - timedelta(hours=2)
    Invoice.objects.filter(billing_reason="subscription_cycle").update(
        finalized_at=earlier, period_end=earlier
    )
    Invoice.objects.filter(billing_reason="subscription_create").update(
        finalized_at=earlier, period_start=earlier
    )
    send("api.call", "ada", (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), count=7)
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    url = reverse("admin:billing_dashboard")
    # 13: the session remembers the organization chosen
    with django_assert_max_num_queries(13):
        response = client.get(url, {"organization": str(org.pk)})
    assert response.status_code == 200
    body = response.content.decode()
    assert '<div class="ml-value" data-field="mrr">39.00 USD</div>' in body  # MRR
    assert f"{now:%B %Y}: 210.00 USD invoiced, 149.00 USD paid" in body
    # the month's figures are on the page, not only in the tooltip
    assert (
        f'<tr><td class="ml-nowrap">{now:%B %Y}</td><td class="ml-right ml-num">210.00 USD</td>'
        '<td class="ml-right ml-num">149.00 USD</td></tr>'
    ) in body
    assert ">210.00</text>" in body  # above its bar
    assert (
        '<td>Pro</td><td class="ml-right ml-num">90.00 USD</td><td class="ml-right">3</td>'
    ) in body
    assert body.count('<svg xmlns="http://www.w3.org/2000/svg" role="img"') == 2  # revenue, meter
    assert f"{now:%Y-%m-%d}: 7</title>" in body
    assert 'Total <strong class="ml-num">7</strong>' in body

    changelist = client.get(reverse("admin:billing_invoice_changelist"))
    assert f'href="{url}"' in changelist.content.decode()
    assert Client().get(url).status_code == 302  # staff only


def test_dashboard_opens_on_the_busiest_organization_and_remembers_the_choice(org, book):
    # alphabetically first, but without a subscription
    quiet = Organization.objects.create(name="Aardvark Labs")
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    url = reverse("admin:billing_dashboard")
    assert f"<h2>{org.name}</h2>" in client.get(url).content.decode()
    assert f"<h2>{quiet.name}</h2>" in client.get(url, {"organization": quiet.pk}).content.decode()
    assert f"<h2>{quiet.name}</h2>" in client.get(url).content.decode()  # remembered
    # an unknown organization falls back to the remembered one, not to an error
    assert f"<h2>{quiet.name}</h2>" in client.get(url, {"organization": "nope"}).content.decode()
