"""The usage page: the same numbers as customer state, the daily chart, the billing hooks, and
the organization's look."""

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from djmoney.money import Money
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from metering import customer_meters, meters
from metering.ingest import ingest_events
from metering.models import CustomerMeter
from portal import charts, usage
from portal.branding import contrast_ratio, palette
from portal.extensions import ChargeEstimate, Period, Section, registry


def field_values(html: str, field: str) -> list[Decimal]:
    return [Decimal(v) for v in re.findall(rf'data-field="{field}" data-value="([^"]+)"', html)]


def state_of(world, customer) -> dict:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.acme.secret}")
    response = client.get(f"/v1/customers/{customer.pk}/state")
    assert response.status_code == 200
    return {m["meter_id"]: m for m in response.json()["active_meters"]}


def test_usage_numbers_equal_customer_state(world, signed_in):
    alice = world.alice
    ingest_events(
        organization=world.acme.organization,
        events=[
            {
                "name": "llm.completion",
                "external_customer_id": "alice",
                "metadata": {"tokens": 0.1},
            },
            {
                "name": "llm.completion",
                "external_customer_id": "alice",
                "metadata": {"tokens": 0.2},
            },
        ],
    )
    customer_meters.grant_credits(customer=alice, meter=world.acme.calls, units=2, reason="welcome")
    customer_meters.grant_credits(
        customer=alice, meter=world.acme.tokens, units=1000, reason="welcome"
    )

    html = signed_in(alice).get("/portal/acme-inc/").content.decode()
    state = state_of(world, alice)

    # by meter name: API calls, then Tokens
    assert field_values(html, "consumed") == [Decimal(3), Decimal("350.3")]
    assert field_values(html, "credited") == [Decimal(2), Decimal(1000)]
    assert field_values(html, "balance") == [Decimal(-1), Decimal("649.7")]
    calls, tokens = state[str(world.acme.calls.pk)], state[str(world.acme.tokens.pk)]
    assert (calls["consumed_units"], calls["credited_units"], calls["balance"]) == (3, 2, -1)
    assert (tokens["consumed_units"], tokens["credited_units"], tokens["balance"]) == (
        350.3,
        1000,
        649.7,
    )
    # displayed: thousands separator, unit labels; credits left never below zero, the excess
    # said in words
    assert '<span class="num">350.3</span> <span class="unit">tokens</span>' in html
    assert '<span class="num">1,000</span> <span class="unit">tokens</span>' in html
    assert '<span class="num">649.7</span> <span class="unit">tokens</span>' in html
    assert (
        'data-field="balance" data-value="-1"><span class="num">0</span> <span class="unit">'
        'units</span><br><span class="muted" data-field="beyond-credits"><span class="num">1'
        "</span> beyond the credits</span>"
    ) in html
    assert html.count("Credits left") == 2


def test_meters_fragment_is_the_live_region(world, signed_in):
    client = signed_in(world.bob)
    fragment = client.get("/portal/acme-inc/usage/meters", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert html.startswith('<section id="meters"')
    assert "<html" not in html
    assert field_values(html, "consumed") == [Decimal(5), Decimal(7)]
    # no credits: no credits and no balance (never a negative balance for an unbudgeted meter)
    assert 'data-field="credited"' not in html and 'data-field="balance"' not in html
    assert "Credits left" not in html
    assert 'hx-trigger="every 5s, visibilitychange from:document"' in html


def test_archived_meters_leave_the_page(world, signed_in):
    meters.set_archived(meter=world.acme.tokens, archived=True)
    html = signed_in(world.alice).get("/portal/acme-inc/").content.decode()
    assert "Tokens" not in html
    assert field_values(html, "consumed") == [Decimal(3)]


def test_customer_without_usage(world, signed_in):
    from customers.services import create_customer

    dave = create_customer(organization=world.acme.organization, email="dave@acme-inc.example")
    html = signed_in(dave).get("/portal/acme-inc/").content.decode()
    assert "No usage recorded yet." in html


def test_page_works_without_javascript_and_serves_htmx_locally(world, signed_in):
    html = signed_in(world.alice).get("/portal/acme-inc/").content.decode()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert scripts == ["/static/portal/live.js", "/static/django_htmx/htmx-2.min.js"]
    assert "<noscript>" in html
    # landmarks, a skip link, a labelled navigation
    for landmark in ["<header", '<nav aria-label="Portal">', '<main id="main"', "<footer"]:
        assert landmark in html
    assert '<a class="skip-link" href="#main">' in html
    assert 'aria-current="page"' in html


def test_htmx_static_file_is_served(live_server):
    import urllib.request

    with urllib.request.urlopen(f"{live_server.url}/static/django_htmx/htmx-2.min.js") as response:
        body = response.read()
    assert response.status == 200 and b"htmx" in body[:200]


# --- chart ------------------------------------------------------------------------------------


def _days_this_month(now: datetime) -> tuple[datetime, datetime]:
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    early = max(month_start + timedelta(minutes=1), now - timedelta(days=2))
    return early, now - timedelta(seconds=1)


def test_daily_chart_of_the_current_month(world, signed_in):
    now = timezone.now()
    early, late = _days_this_month(now)
    customer = world.carol
    ingest_events(
        organization=world.globex.organization,
        events=[
            {"name": "api.call", "external_customer_id": "carol", "timestamp": early.isoformat()},
            {"name": "api.call", "external_customer_id": "carol", "timestamp": late.isoformat()},
            {"name": "api.call", "external_customer_id": "carol", "timestamp": late.isoformat()},
            # last month: counted by the all-time meter, not drawn in this month's chart
            {
                "name": "api.call",
                "external_customer_id": "carol",
                "timestamp": (early.replace(day=1) - timedelta(days=3)).isoformat(),
            },
        ],
    )
    calls = CustomerMeter.objects.get(customer=customer, meter=world.globex.calls)
    daily = usage.daily_usage(calls, window_start=None, now=now)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert daily.period.start == month_start
    assert len(daily.days) == now.day
    assert daily.period_days == (daily.period.end - daily.period.start).days
    by_day = dict(daily.days)
    # 2 from the fixture (ingested "now") + early + 2 late
    expected = {d: Decimal(0) for d in by_day}
    expected[now.date()] += 2
    expected[early.date()] += 1
    expected[late.date()] += 2
    assert by_day == expected
    assert sum(by_day.values()) == 5

    client = signed_in(customer)
    fragment = client.get(f"/portal/globex/meters/{calls.pk}/chart")
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert html.count('<rect class="bar"') == now.day
    cells = re.findall(r'<td data-value="([^"]+)">', html)
    assert [Decimal(c) for c in cells] == [v for _, v in daily.days]
    assert 'role="img"' in html and "<figcaption" in html


def test_chart_starts_at_a_reset_inside_the_month(world):
    now = timezone.now()
    early, late = _days_this_month(now)
    customer_meters.reset_meter(customer=world.carol, meter=world.globex.calls, timestamp=late)
    calls = CustomerMeter.objects.get(customer=world.carol, meter=world.globex.calls)
    start = usage.window_start(calls)
    assert start == late
    daily = usage.daily_usage(calls, window_start=start, now=now)
    assert daily.period.start == late
    assert daily.days[0][0] == late.date()


# --- billing hooks ----------------------------------------------------------------------------


@pytest.fixture
def clean_registry():
    saved = (
        list(registry.charge_estimators),
        list(registry.period_providers),
        list(registry.sections),
    )
    yield registry
    registry.charge_estimators[:], registry.period_providers[:], registry.sections[:] = saved


def test_charge_estimator_fills_the_estimated_charge(world, signed_in, clean_registry):
    seen = []

    def estimate(*, customer, meters):
        seen.append((customer.pk, [m.consumed for m in meters]))
        calls = next(m for m in meters if m.name == "API calls")
        amount = Money(calls.consumed * Decimal("0.25"), "EUR")  # 3 calls at 25 cents
        return ChargeEstimate(by_meter={calls.meter_id: amount}, total=amount)

    clean_registry.charge_estimators.append(estimate)
    html = signed_in(world.alice).get("/portal/acme-inc/").content.decode()
    assert seen == [(world.alice.pk, [Decimal(3), Decimal(350)])]
    assert re.search(r'data-field="estimated-total">€0\.75<', html)
    charges = re.findall(r'data-field="estimated-charge" class="num">(.*?)</dd>', html)
    assert charges == ["€0.75", '<span class="muted">not priced</span>']


def test_period_provider_sets_the_chart_range(world, clean_registry):
    now = timezone.now()
    period = Period(now - timedelta(days=3), now + timedelta(days=27))

    def provider(*, customer, meters):
        return {meter.pk: period for meter in meters if meter.name == "API calls"}

    clean_registry.period_providers.append(provider)
    calls = CustomerMeter.objects.get(customer=world.alice, meter=world.acme.calls)
    tokens = CustomerMeter.objects.get(customer=world.alice, meter=world.acme.tokens)
    assert usage.daily_usage(calls, window_start=None, now=now).period == period
    assert len(usage.daily_usage(calls, window_start=None, now=now).days) == 4
    assert usage.daily_usage(tokens, window_start=None, now=now).period.start.day == 1


def test_sections_are_linked_from_the_navigation(world, signed_in, clean_registry):
    clean_registry.sections.append(Section("Usage again", "portal:usage"))
    html = signed_in(world.alice).get("/portal/acme-inc/").content.decode()
    assert html.count('href="/portal/acme-inc/"') == 2


# --- look -------------------------------------------------------------------------------------


def test_organization_name_and_accent(world, signed_in):
    html = signed_in(world.alice).get("/portal/acme-inc/").content.decode()
    assert '<p class="brand">Acme Inc</p>' in html
    # gold: dark text on it, and a darkened gold for links on white
    p = palette("#ffd700")
    assert p.on_accent == "#000000"
    assert f"--accent: #ffd700; --on-accent: #000000; --accent-text: {p.accent_text};" in html
    assert contrast_ratio(p.accent_text, "#ffffff") >= 4.5


@given(st.from_regex(r"#[0-9a-f]{6}", fullmatch=True))
def test_every_accent_gets_readable_text(accent):
    p = palette(accent)
    assert contrast_ratio(p.on_accent, p.accent) >= 4.5
    assert contrast_ratio(p.accent_text, "#ffffff") >= 4.5
    if contrast_ratio(accent, "#ffffff") >= 4.5:
        assert p.accent_text == accent  # a readable colour is kept as chosen


def test_contrast_ratio_reference_values():
    assert round(contrast_ratio("#000000", "#ffffff"), 2) == 21.0
    assert round(contrast_ratio("#777777", "#ffffff"), 2) == 4.48
    assert round(contrast_ratio("#2563eb", "#ffffff"), 2) == 5.17


def test_organization_slug_and_accent_validation(db):
    from django.core.exceptions import ValidationError

    from customers.models import Organization

    first = Organization.objects.create(name="Ünïcode & Co")
    second = Organization.objects.create(name="unicode co")
    third = Organization.objects.create(name="!!!")
    assert (first.slug, second.slug, third.slug) == ("unicode-co", "unicode-co-2", "organization")
    third.accent_color = "red"
    with pytest.raises(ValidationError) as caught:
        third.full_clean()
    assert "accent_color" in caught.value.message_dict


# --- chart geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, ceiling",
    [
        (Decimal(0), Decimal(1)),
        (Decimal(-4), Decimal(1)),
        (Decimal(1), Decimal(1)),
        (Decimal("1.01"), Decimal(2)),
        (Decimal(3), Decimal(5)),
        (Decimal(7), Decimal(10)),
        (Decimal(10), Decimal(10)),
        (Decimal(11), Decimal(20)),
        (Decimal(4200), Decimal(5000)),
        (Decimal("0.03"), Decimal("0.05")),
    ],
)
def test_nice_ceiling(value, ceiling):
    assert charts.nice_ceiling(value) == ceiling


@pytest.mark.parametrize(
    "value, text",
    [
        (Decimal(1234567), "1,234,567"),
        (Decimal("1234.5"), "1,234.5"),
        (Decimal("0.00005"), "0.0001"),
        (Decimal("-0.00005"), "-0.0001"),
        (Decimal("2.50000"), "2.5"),
        (Decimal("-12"), "-12"),
        (7, "7"),
    ],
)
def test_format_number(value, text):
    assert charts.format_number(value) == text


def test_bar_geometry():
    days = [
        (datetime(2026, 11, d, tzinfo=UTC).date(), Decimal(v))
        for d, v in [(1, 0), (2, 5), (3, 10), (4, -3)]
    ]
    chart = charts.bar_chart(days, slots=30)
    plot_height = charts.HEIGHT - charts.PLOT_TOP - charts.PLOT_BOTTOM  # 180
    assert [b.height for b in chart.bars] == [0, plot_height / 2, plot_height, 0]
    assert all(b.y + b.height == chart.baseline for b in chart.bars)
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    # the whole period is laid out: Nov 1 to Nov 30, whatever has happened so far
    assert [(t.label, t.anchor) for t in chart.x_ticks] == [
        ("Nov 1", "start"),
        ("Nov 16", "middle"),
        ("Nov 30", "end"),
    ]
    # the plot starts right of the widest y label ("10": two digits at 26 units, 8 on each side)
    assert chart.plot_left == math.ceil(2 * 0.62 * 26) + 16 == 49
    slot = (charts.WIDTH - chart.plot_left - charts.PLOT_RIGHT) / 30
    assert chart.bars[1].x == round(chart.plot_left + slot + 0.2 * slot / 2, 2)
    assert chart.bars[0].width == round(slot * 0.8, 2)
    assert chart.bars[-1].x + chart.bars[-1].width < chart.plot_left + 4 * slot


def test_single_day_chart():
    chart = charts.bar_chart([(datetime(2026, 11, 5, tzinfo=UTC).date(), Decimal(2))])
    assert [(t.label, t.anchor) for t in chart.x_ticks] == [("Nov 5", "middle")]
    assert chart.bars[0].height == charts.HEIGHT - charts.PLOT_TOP - charts.PLOT_BOTTOM
