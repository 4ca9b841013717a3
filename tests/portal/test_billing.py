"""The portal's billing pages: the same numbers as the API's upcoming invoice, the usage page's
estimated charges, cancel at period end and undo through the portal, invoices and their HTML
download, and isolation of every billing URL between customers and organizations."""

import re
import subprocess
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from billing import plan_changes, subscriptions
from billing.catalog import PriceSpec, create_product
from billing.models import Invoice
from metering.models import CustomerMeter
from portal import usage

from .conftest import add_billing, plan, portal_path


def usd(cents: int) -> str:
    """How the portal writes an amount of US cents."""
    return f"${Decimal(cents) / 100:,.2f}"


def api_client(tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.secret}")
    return client


def fields(html: str, name: str) -> list[str]:
    # djmoney writes "$\xa01.00"; the no-break space is presentation
    return [v.replace("\xa0", "") for v in re.findall(rf'data-field="{name}"[^>]*>(.*?)</', html)]


def csrf_token(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


@pytest.fixture
def billed(world):
    return add_billing(world)


def test_upcoming_invoice_equals_the_api_to_the_cent(billed, signed_in):
    sub = billed.alice_sub
    api = api_client(billed.acme).get(f"/v1/subscriptions/{sub.pk}/upcoming").json()
    html = signed_in(billed.alice).get(portal_path(billed.alice, "subscriptions")).content.decode()

    # by hand: calls 3 now + 1 late = 4 × 25 = 100; tokens 350 × 0.5 = 175; renewal 1999
    items = api["items"]
    assert [i["amount"] for i in items] == [100, 175, 1999]
    assert fields(html, "line-amount") == [usd(i["amount"]) for i in items]
    late = re.findall(r'data-field="late-units" data-value="([^"]+)"', html)
    assert [Decimal(v) for v in late] == [Decimal(1)]
    # 2274 − 227 (227.4) = 2047; tax per line: 18 + 32 + 360 = 410; total 2457
    expected = {
        "subtotal": api["subtotal_amount"],
        "discount": api["discount_amount"],
        "tax": api["tax_amount"],
        "total": api["total_amount"],
    }
    assert expected == {"subtotal": 2274, "discount": 227, "tax": 410, "total": 2457}
    for name, cents in expected.items():
        shown = fields(html, name)[0].removeprefix("−")
        assert shown == usd(cents), name
    period = fields(html, "period")
    assert sub.current_period_start.strftime("%Y-%m-%dT%H:%M:%S") in html
    assert period and "UTC" in html


def test_usage_page_estimates_equal_the_subscription_meters(billed, signed_in):
    sub = billed.alice_sub
    api = api_client(billed.acme).get(f"/v1/subscriptions/{sub.pk}").json()
    by_meter = {m["meter_id"]: m["amount"] for m in api["meters"]}
    assert by_meter == {str(billed.acme.calls.pk): 100, str(billed.acme.tokens.pk): 175}

    html = signed_in(billed.alice).get(portal_path(billed.alice)).content.decode()
    # cards by meter name: API calls, Tokens
    assert fields(html, "estimated-charge") == [usd(100), usd(175)]
    assert fields(html, "estimated-total") == [usd(275)]
    # the usage numbers are the billing period's (late unit included), like customer state
    consumed = re.findall(r'data-field="consumed" data-value="([^"]+)"', html)
    assert [Decimal(v) for v in consumed] == [Decimal(4), Decimal(350)]


def test_chart_range_is_the_billing_period(billed):
    sub = billed.alice_sub
    calls = CustomerMeter.objects.get(customer=billed.alice, meter=billed.acme.calls)
    daily = usage.daily_usage(calls, window_start=None)
    assert (daily.period.start, daily.period.end) == (
        sub.current_period_start,
        sub.current_period_end,
    )
    # bob has no subscription: the calendar month
    bobs = CustomerMeter.objects.get(customer=billed.bob, meter=billed.acme.calls)
    assert usage.daily_usage(bobs, window_start=None).period.start.day == 1


def test_unpriced_customer_shows_no_estimate(billed, signed_in):
    html = signed_in(billed.bob).get(portal_path(billed.bob)).content.decode()
    assert "estimated-total" not in html
    assert html.count("not priced") == 2
    page = signed_in(billed.bob).get(portal_path(billed.bob, "subscriptions")).content.decode()
    assert "No active subscriptions." in page


def test_cancel_and_undo_through_the_portal_show_in_the_api(billed, signed_in):
    sub = billed.alice_sub
    api = api_client(billed.acme)
    client = signed_in(billed.alice, enforce_csrf_checks=True)
    page = portal_path(billed.alice, "subscriptions")
    action = portal_path(billed.alice, f"subscriptions/{sub.pk}/cancel")

    # without the CSRF token the form is refused and nothing changes
    assert client.post(action, {"cancel": "1"}).status_code == 403
    assert api.get(f"/v1/subscriptions/{sub.pk}").json()["cancel_at_period_end"] is False

    html = client.get(page).content.decode()
    assert "Cancel at period end" in html
    response = client.post(action, {"cancel": "1", "csrfmiddlewaretoken": csrf_token(html)})
    assert response.status_code == 302 and response["Location"] == page
    body = api.get(f"/v1/subscriptions/{sub.pk}").json()
    assert body["cancel_at_period_end"] is True
    assert body["ends_at"] is not None
    # a cancelled subscription's upcoming invoice has no renewal line: 100 + 175 = 275
    html = client.get(page).content.decode()
    assert "Keep subscription" in html
    assert fields(html, "subtotal") == [usd(275)]
    upcoming = api.get(f"/v1/subscriptions/{sub.pk}/upcoming").json()
    assert upcoming["subtotal_amount"] == 275
    assert fields(html, "total") == [usd(upcoming["total_amount"])]

    response = client.post(action, {"cancel": "0", "csrfmiddlewaretoken": csrf_token(html)})
    assert response.status_code == 302
    body = api.get(f"/v1/subscriptions/{sub.pk}").json()
    assert (body["cancel_at_period_end"], body["ends_at"]) == (False, None)


def test_cancel_with_a_bad_value_is_a_400_and_changes_nothing(billed, signed_in):
    sub = billed.alice_sub
    client = signed_in(billed.alice)
    response = client.post(
        portal_path(billed.alice, f"subscriptions/{sub.pk}/cancel"), {"cancel": "maybe"}
    )
    assert response.status_code == 400
    sub.refresh_from_db()
    assert sub.cancel_at_period_end is False


def test_ended_subscription_cannot_be_changed(billed, signed_in):
    sub = billed.alice_sub
    client = signed_in(billed.alice)
    subscriptions.revoke(sub)
    response = client.post(
        portal_path(billed.alice, f"subscriptions/{sub.pk}/cancel"), {"cancel": "1"}
    )
    assert response.status_code == 302 and response["Location"].endswith("?refused=1")
    sub.refresh_from_db()
    assert (sub.status, sub.cancel_at_period_end) == ("canceled", False)


def test_invoices_page_lists_status_and_total_with_a_download(billed, signed_in):
    client = signed_in(billed.alice)
    invoices = list(Invoice.objects.filter(customer=billed.alice).order_by("sequence"))
    assert [i.billing_reason for i in invoices] == ["subscription_create", "subscription_cycle"]
    invoices[0].status = "paid"
    invoices[0].save()
    api_orders = {
        o["id"]: o
        for o in api_client(billed.acme)
        .get("/v1/orders/", {"customer_id": str(billed.alice.pk)})
        .json()["items"]
    }

    html = client.get(portal_path(billed.alice, "invoices")).content.decode()
    assert re.findall(r"data-invoice-id=\"([^\"]+)\"", html) == [
        str(i.pk) for i in reversed(invoices)
    ]
    assert fields(html, "status") == ["Open", "Paid"]
    # each row: what it is for, its period, issue date and total
    issued = re.findall(
        r'data-field="issued"><span class="cell-label">Issued </span><time datetime="([^"]+)"', html
    )
    assert issued == [i.finalized_at.isoformat() for i in reversed(invoices)]
    periods = re.findall(
        r'data-field="period"><span class="cell-label">Period </span><span class="nowrap">([^<]+)<',
        html,
    )
    assert len(periods) == 2
    first = invoices[0]
    assert periods[1] == (
        f"{first.period_start:%-d %b} – {first.period_end:%-d %b %Y}"
        if first.period_start.year == first.period_end.year
        else f"{first.period_start:%-d %b %Y} – {first.period_end:%-d %b %Y}"
    )
    # the same period, told apart by what each invoice is for
    assert fields(html, "reason") == ["Pro · renewal and usage", "Pro · first period"]
    assert fields(html, "total") == [
        usd(api_orders[str(i.pk)]["total_amount"]) for i in reversed(invoices)
    ]
    # create invoice: 1999 − 200 = 1799 + 360 tax = 2159
    assert api_orders[str(invoices[0].pk)]["total_amount"] == 2159

    download = client.get(portal_path(billed.alice, f"invoices/{invoices[0].pk}/download"))
    assert download.status_code == 200
    assert download["Content-Type"] == "application/pdf"
    assert download["Content-Disposition"] == f'attachment; filename="{invoices[0].number}.pdf"'
    text = subprocess.run(
        ["pdftotext", "-", "-"], input=download.content, capture_output=True, check=True
    ).stdout.decode()
    assert invoices[0].number in text and "21.59" in text  # the PDF billing stores and emails
    view = client.get(portal_path(billed.alice, f"invoices/{invoices[0].pk}"))
    assert view.status_code == 200 and "Content-Disposition" not in view
    document = view.content.decode()
    assert f"Invoice {invoices[0].number}" in document
    assert fields(document, "total") == [usd(2159)]
    assert fields(document, "tax") == [usd(360)]
    # a page of the portal (its stylesheet, navigation) with the PDF's content and a download
    assert '<link rel="stylesheet" href="/static/portal/portal.css">' in document
    assert fields(document, "subtotal") == [usd(1999)]
    assert fields(document, "discount") == ["−" + usd(200)]
    assert fields(document, "net") == [usd(1799)]
    assert '<th scope="row">TVA 20%</th>' in document
    assert re.search(
        r'data-field="bill-to"><strong>Alice</strong><br>FR<br>alice@acme-inc\.example</address>',
        document,
    )
    assert re.search(r'data-field="seller"><strong>Acme Inc</strong>', document)
    download_url = portal_path(billed.alice, f"invoices/{invoices[0].pk}/download")
    assert f'data-action="download" href="{download_url}" download>Download PDF</a>' in document


def test_billing_urls_of_other_customers_are_404(billed, signed_in):
    alice, bob, carol = billed.alice, billed.bob, billed.carol
    alice_invoice = Invoice.objects.filter(customer=alice).first()
    carol_invoice = Invoice.objects.get(customer=carol)
    alice_sub, carol_sub = billed.alice_sub, billed.carol_sub

    def own_urls(customer, invoice, subscription):
        return [
            ("get", portal_path(customer, f"invoices/{invoice.pk}")),
            ("get", portal_path(customer, f"invoices/{invoice.pk}/download")),
            ("post", portal_path(customer, f"subscriptions/{subscription.pk}/cancel")),
        ]

    attempts = [
        # bob (same organization) with alice's ids
        (bob, own_urls(alice, alice_invoice, alice_sub)),
        # carol (other organization) with alice's ids under her own portal
        (
            carol,
            [
                ("get", portal_path(carol, f"invoices/{alice_invoice.pk}")),
                ("get", portal_path(carol, f"invoices/{alice_invoice.pk}/download")),
                ("post", portal_path(carol, f"subscriptions/{alice_sub.pk}/cancel")),
            ],
        ),
        # alice with carol's ids under her own portal
        (
            alice,
            [
                ("get", portal_path(alice, f"invoices/{carol_invoice.pk}")),
                ("get", portal_path(alice, f"invoices/{carol_invoice.pk}/download")),
                ("post", portal_path(alice, f"subscriptions/{carol_sub.pk}/cancel")),
            ],
        ),
    ]
    for customer, urls in attempts:
        client = signed_in(customer)
        for method, url in urls:
            response = getattr(client, method)(url, {"cancel": "1"} if method == "post" else {})
            assert response.status_code == 404, (customer.external_id, url)
    # a session is only valid under its organization's slug: carol's cookie is not sent to
    # (nor valid at) Acme's portal, so Acme's download is a 404 and the page a sign-in redirect
    carol_client = signed_in(carol)
    acme_download = portal_path(alice, f"invoices/{alice_invoice.pk}/download")
    assert carol_client.get(acme_download).status_code == 404
    assert carol_client.get(portal_path(alice, f"invoices/{alice_invoice.pk}")).status_code == 302
    anonymous = Client().post(portal_path(alice, f"subscriptions/{alice_sub.pk}/cancel"))
    assert anonymous.status_code == 404
    for sub in (alice_sub, carol_sub):
        sub.refresh_from_db()
        assert sub.cancel_at_period_end is False
    # the lists only hold the customer's own invoices
    bob_page = signed_in(bob).get(portal_path(bob, "invoices")).content.decode()
    assert "No invoices yet." in bob_page and str(alice_invoice.pk) not in bob_page


def test_meters_priced_in_two_currencies_have_no_single_total(world, signed_in):
    acme = world.acme
    for name, currency, meter, rate in [
        ("Calls", "EUR", acme.calls, Decimal(10)),
        ("Tokens", "USD", acme.tokens, Decimal(2)),
    ]:
        product = create_product(
            organization=acme.organization,
            name=name,
            currency=currency,
            prices=[PriceSpec(amount_type="metered_unit", meter_id=meter.pk, unit_amount=rate)],
        )
        # started before the world's events, which this period then bills
        started = timezone.now() - timedelta(hours=1)
        subscriptions.create_subscription(customer=world.alice, product=product, started_at=started)

    html = signed_in(world.alice).get(portal_path(world.alice)).content.decode()
    # 3 calls × 10 euro cents; 350 tokens × 2 cents
    assert fields(html, "estimated-charge") == ["€0.30", "$7.00"]
    assert "estimated-total" not in html


def test_a_scheduled_plan_change_shows_with_its_renewal_price(billed, signed_in):
    sub = billed.alice_sub
    scale = plan(billed.acme, "Scale")
    scale.prices.filter(amount_type="fixed").update(price_amount=Decimal("49.00"))
    plan_changes.change_product(sub, scale, proration_behavior="next_period")
    html = signed_in(billed.alice).get(portal_path(billed.alice, "subscriptions")).content.decode()
    sub.refresh_from_db()
    assert fields(html, "pending-product") == [
        f"to Scale on {sub.current_period_end:%-d %b %Y %H:%M} UTC"
    ]
    api = api_client(billed.acme).get(f"/v1/subscriptions/{sub.pk}/upcoming").json()
    assert api["items"][-1]["amount"] == 4900
    assert fields(html, "line-amount")[-1] == usd(4900)
