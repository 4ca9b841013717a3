"""The customer portal's pages as a customer sees them, in Debian's Chromium: usage,
subscriptions, invoices and one invoice, at desktop width (1280 px) and on a 375 px phone.

The customer is a heavy one (hundreds of millions of tokens, a dollar amount in the millions)
with every kind of meter (count, sum, max, average, distinct), credits on one meter (the
period's and a prepaid grant), a spend threshold, usage of earlier periods and three invoices
issued the same day. Every page must show one period (stated
on it), label each figure by what it is, and pass the shared layout checks: no text cut (axis
labels included), no number across lines, no horizontal scroll, and no decimal with more digits
than its currency (USD: 2) or meter needs (the average meter: 2; a rate of half a cent: 3).

METERLINE_SCREENSHOTS_DIR=docs/img keeps the screenshots (docs/portal.md shows them)."""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from moneyed import Money
from polar.v2026_10 import Polar

from billing import credits, cycles, discounts, invoices, subscriptions, taxes, thresholds
from billing.catalog import PriceSpec, create_product
from billing.models import Invoice
from customers.services import create_customer
from metering import customer_meters, meters
from metering.ingest import ingest_events
from portal.templatetags.portal import day_range

from .layout import DESKTOP as _WIDE
from .layout import assert_readable, chromium, phone_page, screenshot

DESKTOP = {**_WIDE, "width": 1280}
DECIMALS = {".unit-price": 3}  # half a US cent per token: $0.005
PAGES = [("", "usage"), ("subscriptions", "subscriptions"), ("invoices", "invoices")]


@pytest.fixture(autouse=True)
def _eager_tasks():
    """Invoice emails and the like run in the process that enqueues them."""
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def _filter(name: str) -> dict:
    return {
        "conjunction": "and",
        "clauses": [{"property": "name", "operator": "eq", "value": name}],
    }


@dataclass
class Scene:
    base_url: str
    secret: str
    period: str  # the billing period as the page states it
    invoice_ids: list[str]  # newest first
    invoice_numbers: list[str]
    cycle_invoice_id: str  # the latest renewal, with metered lines
    tokens_total: int
    grant_expiry: str  # the prepaid grant's expiry as the page writes it


@pytest.fixture
def scene(live_server, transactional_db, token_for, settings) -> Scene:
    settings.PORTAL_POLL_SECONDS = 3600  # nothing refreshes while the page is measured
    organization, secret = token_for("Acme Inc")
    organization.accent_color = "#4f46e5"
    organization.invoice_address = "500 Market Street\nSan Francisco, CA 94105\nUSA"
    organization.save(update_fields=["accent_color", "invoice_address"])
    org = organization

    def meter(name, event, aggregation, **kwargs):
        return meters.create_meter(
            organization=org, name=name, filter=_filter(event), aggregation=aggregation, **kwargs
        )

    calls = meter("API calls", "api.call", {"func": "count"})
    tokens = meter("Tokens", "llm", {"func": "sum", "property": "tokens"}, unit="token")
    meter(
        "Peak sessions",
        "sessions",
        {"func": "max", "property": "open"},
        unit="custom",
        custom_label="sessions",
    )
    meter("Latency", "latency", {"func": "avg", "property": "ms"}, unit="custom", custom_label="ms")
    meter("Active users", "seen", {"func": "unique", "property": "user"})

    alice = create_customer(
        organization=org,
        email="alice@example.com",
        external_id="alice",
        name="Alice Martin",
    )
    alice.billing_address = {
        "line1": "12 rue de Rivoli",
        "postal_code": "75001",
        "city": "Paris",
        "country": "FR",
    }
    alice.save()
    taxes.create_tax_rate(
        organization=org, name="TVA", country="FR", state=None, basis_points=2000, inclusive=False
    )
    ten_off = discounts.create_discount(
        organization=org, name="Launch", type="percentage", basis_points=1000, duration="forever"
    )
    product = create_product(
        organization=org,
        name="Scale",
        prices=[
            PriceSpec(amount_type="fixed", price_amount=4900),
            PriceSpec(amount_type="metered_unit", meter_id=calls.pk, unit_amount=Decimal(2)),
            PriceSpec(amount_type="metered_unit", meter_id=tokens.pk, unit_amount=Decimal("0.5")),
        ],
    )
    now = timezone.now()
    started = now - timedelta(days=65)
    subscription = subscriptions.create_subscription(
        customer=alice, product=product, started_at=started, discount=ten_off
    )

    def events(name, at, values=None, count=1):
        row = {"name": name, "external_customer_id": "alice", "timestamp": at.isoformat()}
        if values is None:
            return [row] * count
        return [{**row, "metadata": metadata} for metadata in values]

    # earlier periods: usage the two renewals bill, and a peak far above this period's
    past = []
    for days in (3, 34):
        at = started + timedelta(days=days)
        past += events("api.call", at, count=40)
        past += events("llm", at, [{"tokens": 2_500_000}])
        past += events("sessions", at, [{"open": 900}])
    ingest_events(organization=org, events=past)
    cycles.close_due(as_of=now)
    subscription.refresh_from_db()
    period_start = subscription.current_period_start

    # this period: usage on its first days (and today)
    days = [min(period_start + timedelta(days=d, hours=1), now) for d in range(4)]
    tokens_by_day = [118_595_428, 97_000_000, 140_190_858, 1]
    current = []
    for index, at in enumerate(days):
        current += events("api.call", at, count=[120, 80, 95, 7][index])
        current += events("llm", at, [{"tokens": tokens_by_day[index]}])
        current += events("sessions", at, [{"open": v} for v in (12, 37, 25, 3)[index : index + 1]])
        current += events("latency", at, [{"ms": 120.5}, {"ms": 98.25}, {"ms": 101}])
        current += events("seen", at, [{"user": f"u{index}"}, {"user": "u9"}])
    ingest_events(organization=org, events=current)
    customer_meters.grant_credits(customer=alice, meter=calls, units=500, reason="welcome")

    issued = list(Invoice.objects.filter(customer=alice).order_by("-sequence"))
    assert [i.billing_reason for i in issued] == [
        "subscription_cycle",
        "subscription_cycle",
        "subscription_create",
    ]
    invoices.mark_paid(issued[-1])
    # a prepaid grant that outlives the period (the period's own 500 credits are used first), and
    # a threshold above this period's charges (set after the usage: none issued)
    expiry = now + timedelta(days=90)
    credits.grant(customer=alice, meter=calls, units=1000, expires_at=expiry)
    thresholds.set_subscription_threshold(subscription, Money("2000000.00", "USD"))
    return Scene(
        base_url=live_server.url,
        secret=secret,
        period=day_range(subscription.current_period_start, subscription.current_period_end),
        invoice_ids=[str(i.pk) for i in issued],
        invoice_numbers=[i.number for i in issued],
        cycle_invoice_id=str(issued[0].pk),
        tokens_total=sum(tokens_by_day),
        grant_expiry=f"{expiry.day} {expiry:%b %Y}",
    )


def card(page, name: str) -> dict[str, str]:
    """A meter card's rows: label → figure, as the customer reads them."""
    rows = page.locator(".meter", has=page.get_by_role("heading", name=name, exact=True))
    labels = rows.locator(".row dt").all_inner_texts()
    values = rows.locator(".row dd").all_inner_texts()
    return {k.strip(): v.replace("\xa0", " ").strip() for k, v in zip(labels, values, strict=True)}


def check_usage(page, scene: Scene):
    scope = page.locator('[data-field="period"]').inner_text()
    assert scope == f"Current billing period: {scene.period} (UTC)"
    assert card(page, "Tokens") == {
        "Used this period": f"{scene.tokens_total:,} tokens",
        "Estimated charge": "$1,778,931.44",
    }
    # the highest value of this period (37), not the earlier periods' 900
    assert card(page, "Peak sessions") == {
        "Highest this period": "37 sessions",
        "Estimated charge": "not priced",
    }
    # (120.5 + 98.25 + 101) / 3 = 106.58333…
    assert card(page, "Latency")["Average this period"] == "106.58 ms"
    assert card(page, "Active users")["Distinct this period"] == "5 values"
    # credits only where there are some; none is ever shown below zero
    calls = card(page, "API calls")
    assert calls["Used this period"] == "302 units"
    assert "Balance" not in page.locator("main").inner_text()
    assert [k for k in calls if k.startswith("Credits")] == ["Credits", "Credits left"]
    # 500 of the period + 1,000 prepaid; the period's 500 go first (they expire with it)
    assert (calls["Credits"], calls["Credits left"]) == ("1,500 units", "1,198 units")
    assert calls["Prepaid credits used earliest expiry first"] == (
        f"1,000 credits, 1,000 left, expire {scene.grant_expiry}"
    )
    assert page.locator('[data-field="balance"]').count() == 1
    captions = page.locator(".chart figcaption").all_inner_texts()
    assert [c.split(" (UTC)")[0].replace(f" {scene.period}", "") for c in captions] == [
        "API calls: units per day",
        "Active users: distinct values per day",
        "Latency: daily average, ms",
        "Peak sessions: daily maximum, sessions",
        "Tokens: tokens per day",
    ]
    # compact axis labels: 140,190,858 on the busiest day → steps of 100M
    tokens_chart = page.locator(".chart", has_text="Tokens: tokens per day")
    assert tokens_chart.locator(".y-label").all_text_contents() == ["0", "100M", "200M"]


def check_subscriptions(page, scene: Scene):
    threshold = page.locator('[data-field="threshold"]').inner_text().replace("\xa0", " ")
    assert "We invoice your usage whenever it reaches $2,000,000.00" in threshold
    # the tokens' charges (the calls are all credited), nothing invoiced early yet
    assert "not invoiced yet this period: $1,778,931.44" in threshold
    assert "Nothing invoiced early this period yet." in threshold


def check_invoices(page, scene: Scene):
    rows = page.locator("[data-invoice-id]")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.invoiceId)") == scene.invoice_ids
    assert page.locator('[data-field="reason"]').all_inner_texts() == [
        "Scale · renewal and usage",
        "Scale · renewal and usage",
        "Scale · first period",
    ]
    assert page.locator('[data-field="status"]').all_inner_texts() == ["Open", "Open", "Paid"]
    assert page.locator('[data-field="due"]').last.inner_text().startswith("Paid ")
    periods = page.locator('[data-field="period"]').all_inner_texts()
    assert len(set(periods[:2])) == 2  # two renewals issued the same day, for two periods


def check_invoice(page, scene: Scene):
    assert page.locator('[data-field="seller"]').inner_text().splitlines() == [
        "Acme Inc",
        "500 Market Street",
        "San Francisco, CA 94105",
        "USA",
    ]
    assert page.locator('[data-field="bill-to"]').inner_text().splitlines() == [
        "Alice Martin",
        "12 rue de Rivoli",
        "75001",
        "Paris",
        "FR",
        "alice@example.com",
    ]
    assert page.locator('[data-field="unit-price"]').all_inner_texts() == ["$0.02", "$0.005"]
    assert page.get_by_role("link", name="Download PDF").get_attribute("href") == (
        f"/portal/acme-inc/invoices/{scene.cycle_invoice_id}/download"
    )


def test_portal_pages_read_well_on_desktop_and_phone(scene, tmp_path):
    with Polar(scene.secret, base_url=scene.base_url) as polar, chromium() as browser:
        desktop = browser.new_page(viewport=DESKTOP)
        phone = phone_page(browser)
        for page in (desktop, phone):
            page.goto(
                polar.customer_sessions.create(external_customer_id="alice").customer_portal_url
            )
        base = f"{scene.base_url}/portal/acme-inc"
        pages = [*PAGES, (f"invoices/{scene.cycle_invoice_id}", "invoice")]
        checks = {
            "usage": check_usage,
            "subscriptions": check_subscriptions,
            "invoices": check_invoices,
            "invoice": check_invoice,
        }
        for path, name in pages:
            for page, size in ((desktop, "desktop"), (phone, "phone")):
                assert page.goto(f"{base}/{path}").status == 200
                page.locator("main").wait_for()
                if name in checks:
                    checks[name](page, scene)
                screenshot(page, tmp_path, f"portal-{name}-{size}.png")
                assert_readable(page, max_decimals=2, decimals=DECIMALS)
