"""The back office in a real browser (Debian's Chromium, 1440 px wide) on `seed_demo`'s data:
the index, the billing dashboard, the invoices and subscriptions lists, an invoice, a customer
and a meter's preview — nothing cut, no number across lines, no decimal longer than its
currency (unit prices: their significant digits) or meter needs, no sideways scrolling.

Admin pages are checked at desktop width only: Django's admin is a desk tool (its lists scroll
sideways on a phone by design). Set METERLINE_SCREENSHOTS_DIR to keep the screenshots
(docs/img/admin-*.png are made that way)."""

from dataclasses import dataclass

import pytest
from django.core.management import call_command

from billing.models import Invoice
from customers.models import Customer, Organization
from customers.tokens import create_token
from metering.models import Meter

from .layout import DESKTOP, assert_readable, chromium, screenshot

# a unit price may need more digits than its currency (0.002 USD a request)
UNIT_PRICES = {".field-unit_price_display": 6}


@dataclass
class Office:
    base_url: str
    invoice_id: str
    invoice_number: str
    customer_id: str
    meter_id: str


@pytest.fixture
def office(live_server, transactional_db, settings) -> Office:
    settings.DEBUG = True  # seed_demo is for development only
    call_command("seed_demo", events=3000, no_progress=True)
    settings.DEBUG = False
    create_token(organization_name="Acme", label="quiet")  # alphabetically first, no activity
    demo = Organization.objects.get(name="Meterline Demo")
    invoice = (
        Invoice.objects.filter(organization=demo, lines__unit_amount__isnull=False)
        .order_by("-total", "number")
        .first()
    )
    customer = Customer.objects.get(pk=invoice.customer_id)
    meter = Meter.objects.get(organization=demo, name="API requests")
    return Office(live_server.url, str(invoice.pk), invoice.number, str(customer.pk), str(meter.pk))


def test_back_office_pages_read_well(office, tmp_path):
    base = office.base_url
    with chromium() as browser:
        page = browser.new_page(viewport=DESKTOP)
        page.goto(f"{base}/admin/login/")
        page.fill("#id_username", "demo")
        page.fill("#id_password", "meterline-demo")
        page.click("input[type=submit]")
        page.wait_for_url(f"{base}/admin/")

        # the index: the dashboard first, none of celery-beat's schedules
        assert page.get_by_role("link", name="Billing dashboard").is_visible()
        text = page.locator("#content-main").inner_text()
        for noise in ("Clocked", "Crontabs", "Solar events", "Intervals"):
            assert noise not in text, noise
        assert_readable(page)
        screenshot(page, tmp_path, "admin-index.png")

        assert page.locator("#ml-billing-shortcuts").get_by_role("link", name="Margins").is_visible()

        # the dashboard opens on the organization with activity, not on "Acme"
        page.get_by_role("link", name="Billing dashboard").click()
        assert page.locator("#content-main h2").first.inner_text() == "Meterline Demo"
        assert page.locator('[data-field="mrr"]').first.inner_text().endswith(" USD")
        assert page.locator("svg.ml-chart").count() >= 2
        assert_readable(page)
        screenshot(page, tmp_path, "admin-dashboard.png")

        # its margins: the same organization's
        page.locator("#ml-dashboard-links").get_by_role("link", name="Margins").click()
        assert page.locator("h2").first.inner_text() == "Meterline Demo"
        assert page.locator("#content-main").get_by_text("Customers", exact=True).is_visible()

        # lists: an organization filter, every column inside the page at 1440 px
        for path, name in [
            ("billing/invoice/", "admin-invoices.png"),
            ("billing/subscription/", "admin-subscriptions.png"),
            ("metering/event/", "admin-events.png"),
            ("customers/customer/", "admin-customers.png"),
        ]:
            page.goto(f"{base}/admin/{path}")
            assert page.locator("#changelist-filter").get_by_text("By organization").is_visible()
            assert_readable(page)
            screenshot(page, tmp_path, name)

        # an invoice: a read-only document, no Save
        page.goto(f"{base}/admin/billing/invoice/{office.invoice_id}/change/")
        assert page.locator("h1").inner_text() == f"Invoice {office.invoice_number}"
        assert page.locator("input[name=_save], input[name=_continue]").count() == 0
        assert "currency" not in page.locator("#content-main").inner_text().lower().replace(
            "in the currency", ""
        )
        assert page.locator(".ml-doc-total").inner_text().endswith(" USD")
        assert page.locator(".object-tools a.ml-action").count() >= 1  # its money actions
        assert_readable(page, decimals=UNIT_PRICES)
        screenshot(page, tmp_path, "admin-invoice.png")

        # a customer: subscriptions, invoices, balance, meters and credits, then events
        page.goto(f"{base}/admin/customers/customer/{office.customer_id}/change/")
        sections = page.locator(".ml-section h3").all_inner_texts()
        assert sections[:3] == ["Subscriptions", "Invoices", "Customer balance"]
        assert "Meters and credits" in sections and sections[-1].startswith("Recent events")
        assert page.get_by_role("link", name=office.invoice_number).first.is_visible()
        assert_readable(page)
        screenshot(page, tmp_path, "admin-customer.png")

        # a meter's preview chart: its last day's label inside the chart
        page.goto(f"{base}/admin/metering/meter/{office.meter_id}/change/")
        page.get_by_role("button", name="Preview").click()
        page.locator("svg.meter-preview-chart").wait_for()
        assert_readable(page)
        screenshot(page, tmp_path, "admin-meter.png")
