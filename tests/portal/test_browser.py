"""The portal in a real browser: Debian's Chromium driven by Playwright against a live server.

The ORM is only used before the browser starts and after it stops (Playwright's sync API runs an
event loop in this thread, where Django refuses synchronous database access); while the page is
open, the test talks to Meterline the way an application does, over HTTP with polar-sdk.

Set METERLINE_SCREENSHOTS_DIR to keep the screenshots (docs/img/ is made that way)."""

import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core import mail
from polar.v2026_10 import Polar
from rest_framework.test import APIClient

from billing.models import Invoice
from metering.models import CustomerMeter
from payments.models import BillingProfile

from .conftest import add_billing, build_world, subscribe

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}


@dataclass
class Scene:
    base_url: str
    acme_secret: str
    alice_id: str
    alice_email: str
    calls_meter_id: str
    foreign_urls: list[str]  # other customers' chart fragments


@pytest.fixture
def scene(live_server, transactional_db, token_for, settings) -> Scene:
    settings.PORTAL_POLL_SECONDS = 1
    world = build_world(token_for)
    foreign = [
        f"{live_server.url}/portal/{c.organization.slug}/meters/{cm}/chart"
        for c in (world.bob, world.carol)
        for cm in CustomerMeter.objects.filter(customer=c).values_list("pk", flat=True)
    ]
    return Scene(
        base_url=live_server.url,
        acme_secret=world.acme.secret,
        alice_id=str(world.alice.pk),
        alice_email=world.alice.email,
        calls_meter_id=str(world.acme.calls.pk),
        foreign_urls=foreign,
    )


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), "./dev test installs chromium"
    with sync_playwright() as playwright:
        # --no-sandbox: the test command may run as root (CI containers)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser(scene):
    with chromium() as browser:
        yield browser


@pytest.fixture
def polar(scene):
    with Polar(scene.acme_secret, base_url=scene.base_url) as client:
        yield client


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("METERLINE_SCREENSHOTS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path


def consumed(page, meter_id: str) -> str:
    return page.get_attribute(f'[data-meter-id="{meter_id}"] [data-field="consumed"]', "data-value")


def test_live_usage_from_a_polar_session(scene, browser, polar, tmp_path):
    session = polar.customer_sessions.create(external_customer_id="alice")
    page = browser.new_page(viewport=DESKTOP)
    meter_requests = []
    page.on("request", lambda r: "/usage/meters" in r.url and meter_requests.append(r.url))

    response = page.goto(session.customer_portal_url)
    assert response.status == 200
    assert page.url == f"{scene.base_url}/portal/acme-inc/"  # the token left the address bar
    assert page.locator("h1").inner_text() == "Usage"
    assert page.locator(".meter h3").all_inner_texts() == ["API calls", "Tokens"]
    assert consumed(page, scene.calls_meter_id) == "3"
    assert page.locator(".brand").inner_text() == "Acme Inc"
    screenshot(page, tmp_path, "portal-live-usage-desktop.png")

    # An application ingests; the open page shows it without a reload.
    page.evaluate("window.__sameDocument = true")
    polar.events.ingest(
        events=[{"name": "api.call", "external_customer_id": "alice"} for _ in range(4)]
    )
    page.wait_for_function(
        # a function, not an expression: Playwright evals expressions, which the CSP forbids
        f"""() => document.querySelector('[data-meter-id="{scene.calls_meter_id}"] [data-field="consumed"]')
               .dataset.value === "7" """,
        timeout=10_000,
    )
    assert page.evaluate("window.__sameDocument") is True
    state = polar.customers.get_state(id=scene.alice_id)
    by_meter = {m.meter_id: m for m in state.active_meters}
    for meter_id, meter in by_meter.items():
        card = f'[data-meter-id="{meter_id}"]'
        # this month's usage, which is all of it here
        assert float(page.get_attribute(f'{card} [data-field="consumed"]', "data-value")) == (
            meter.consumed_units
        )
        # no credits: neither credits nor a (negative) balance on the card
        assert meter.credited_units == 0
        assert (
            page.locator(f'{card} [data-field="credited"], {card} [data-field="balance"]').count()
            == 0
        )
    assert by_meter[scene.calls_meter_id].consumed_units == 7

    # Hidden tab: polling pauses (no requests, no change)...
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true})"
    )
    page.wait_for_timeout(1500)  # let a request already in flight land
    meter_requests.clear()
    polar.events.ingest(events=[{"name": "api.call", "external_customer_id": "alice"}])
    page.wait_for_timeout(3500)
    assert meter_requests == []
    assert consumed(page, scene.calls_meter_id) == "7"
    # ...and resumes at once when the tab is visible again.
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    page.wait_for_function(
        # a function, not an expression: Playwright evals expressions, which the CSP forbids
        f"""() => document.querySelector('[data-meter-id="{scene.calls_meter_id}"] [data-field="consumed"]')
               .dataset.value === "8" """,
        timeout=5_000,
    )
    assert len(meter_requests) >= 1


def test_phone_screen_has_no_horizontal_scroll(scene, browser, polar, tmp_path):
    session = polar.customer_sessions.create(external_customer_id="alice")
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.goto(session.customer_portal_url)
    page.locator(".chart").first.wait_for()
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " window.innerWidth]"
    )
    assert widths == [375, 375, 375]
    overflowing = page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 375.5)"
        ".map(e => e.tagName + '.' + e.className)"
    )
    assert overflowing == []
    path = screenshot(page, tmp_path, "portal-live-usage-phone.png")
    assert path.stat().st_size > 10_000
    page.goto(f"{scene.base_url}/portal/globex/sign-in")
    assert page.evaluate("document.documentElement.scrollWidth") == 375
    screenshot(page, tmp_path, "portal-sign-in-phone.png")
    context.close()


def test_magic_link_flow_with_the_keyboard(scene, browser, tmp_path):
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{scene.base_url}/portal/acme-inc/")
    assert page.url.startswith(f"{scene.base_url}/portal/acme-inc/sign-in?next=")
    page.get_by_label("Email address").fill(scene.alice_email)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Check your email").wait_for()
    assert len(mail.outbox) == 1
    link = re.search(r"http://\S+", mail.outbox[0].body).group(0)
    assert link.startswith(f"{scene.base_url}/portal/acme-inc/sign-in/link?token=ml_csl_")

    page.goto(link)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{scene.base_url}/portal/acme-inc/")
    assert scene.alice_email in page.locator("footer").inner_text()

    # The link works once.
    second = browser.new_page()
    second.goto(link)
    with second.expect_response(lambda r: r.request.method == "POST") as answer:
        second.get_by_role("button", name="Continue").click()
    assert answer.value.status == 404
    assert second.get_by_role("heading", name="This link has expired").is_visible()

    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_other_customers_urls_are_404_in_the_browser(scene, browser, polar):
    session = polar.customer_sessions.create(external_customer_id="alice")
    page = browser.new_page()
    page.goto(session.customer_portal_url)
    for url in scene.foreign_urls:
        assert page.goto(url).status == 404, url
    # The spent session URL is refused, even in the browser that used it.
    assert page.goto(session.customer_portal_url).status == 404
    assert page.goto(f"{scene.base_url}/portal/acme-inc/").status == 200


def test_works_without_javascript(scene, browser, polar):
    session = polar.customer_sessions.create(external_customer_id="alice")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(session.customer_portal_url)
    assert page.locator(".meter h3").all_inner_texts() == ["API calls", "Tokens"]
    assert page.locator(".chart svg").count() == 2
    page.locator("summary").first.click()  # <details> opens without scripts
    assert page.locator(".chart table").first.is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/portal/acme-inc/sign-in\?signed_out=1$"))
    assert page.get_by_role("status").inner_text() == "You are signed out."
    assert page.goto(f"{scene.base_url}/portal/acme-inc/usage/meters").status == 404
    context.close()


# --- billing ----------------------------------------------------------------------------------


@dataclass
class BilledScene:
    base_url: str
    acme_secret: str
    subscription_id: str
    upcoming_total: int  # cents, from the API
    invoices: list[tuple[str, str, int]]  # (id, number, total cents), newest first
    foreign_urls: list[str]  # carol's invoice and download URLs under Acme's portal


@pytest.fixture
def billed_scene(live_server, transactional_db, token_for, settings) -> BilledScene:
    settings.PORTAL_POLL_SECONDS = 1
    world = add_billing(build_world(token_for))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.acme.secret}")
    upcoming = api.get(f"/v1/subscriptions/{world.alice_sub.pk}/upcoming").json()
    invoices = [
        (str(i.pk), i.number, api.get(f"/v1/orders/{i.pk}").json()["total_amount"])
        for i in Invoice.objects.filter(customer=world.alice).order_by("-sequence")
    ]
    carol_invoice = Invoice.objects.get(customer=world.carol).pk
    return BilledScene(
        base_url=live_server.url,
        acme_secret=world.acme.secret,
        subscription_id=str(world.alice_sub.pk),
        upcoming_total=upcoming["total_amount"],
        invoices=invoices,
        foreign_urls=[
            f"{live_server.url}/portal/acme-inc/invoices/{carol_invoice}",
            f"{live_server.url}/portal/acme-inc/invoices/{carol_invoice}/download",
        ],
    )


def usd(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def money_text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text().replace("\xa0", "")


def test_billing_pages_cancel_undo_and_invoice_download(billed_scene, tmp_path):
    scene = billed_scene
    with Polar(scene.acme_secret, base_url=scene.base_url) as polar, chromium() as browser:
        session = polar.customer_sessions.create(external_customer_id="alice")
        page = browser.new_page(viewport=DESKTOP)
        page.goto(session.customer_portal_url)
        screenshot(page, tmp_path, "portal-usage-billed-desktop.png")

        # the upcoming invoice, reached by keyboard-usable navigation
        page.get_by_role("link", name="Subscriptions").click()
        page.wait_for_url(f"{scene.base_url}/portal/acme-inc/subscriptions")
        assert money_text(page, '[data-field="total"]') == usd(scene.upcoming_total)
        screenshot(page, tmp_path, "portal-billed-subscriptions-desktop.png")

        # cancel at period end, visible through the API; then undo
        page.get_by_role("button", name="Cancel at period end").click()
        page.get_by_role("button", name="Keep subscription").wait_for()
        assert polar.subscriptions.get(id=scene.subscription_id).cancel_at_period_end is True
        page.get_by_role("button", name="Keep subscription").click()
        page.get_by_role("button", name="Cancel at period end").wait_for()
        assert polar.subscriptions.get(id=scene.subscription_id).cancel_at_period_end is False

        # invoices: status and total per row, the download is the invoice's HTML document
        page.get_by_role("link", name="Invoices").click()
        page.wait_for_url(f"{scene.base_url}/portal/acme-inc/invoices")
        rows = page.locator("[data-invoice-id]")
        assert rows.evaluate_all("rows => rows.map(r => r.dataset.invoiceId)") == [
            invoice_id for invoice_id, _, _ in scene.invoices
        ]
        assert [
            t.replace("\xa0", "") for t in page.locator('[data-field="total"]').all_inner_texts()
        ] == [usd(total) for _, _, total in scene.invoices]
        screenshot(page, tmp_path, "portal-billed-invoices-desktop.png")
        invoice_id, number, total = scene.invoices[-1]
        with page.expect_download() as download_info:
            page.get_by_role("link", name=f"Download invoice {number}").click()
        download = download_info.value
        assert download.suggested_filename == f"{number}.pdf"
        text = subprocess.run(
            ["pdftotext", download.path(), "-"], capture_output=True, check=True
        ).stdout.decode()
        assert number in text and f"{total / 100:.2f}" in text

        # opening the invoice shows the same document
        page.get_by_role("link", name=number, exact=True).click()
        page.wait_for_url(f"{scene.base_url}/portal/acme-inc/invoices/{invoice_id}")
        assert page.get_by_role("heading", level=1).inner_text() == f"Invoice {number}"
        assert money_text(page, '[data-field="total"]') == usd(total)

        # another customer's invoice (another organization's) is a 404 here
        for url in scene.foreign_urls:
            assert page.goto(url).status == 404, url

        # phone: the billing pages fit 375 px
        phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
        small = phone.new_page()
        small.goto(polar.customer_sessions.create(external_customer_id="alice").customer_portal_url)
        for path, name in [
            ("", "usage-billed"),
            ("subscriptions", "billed-subscriptions"),
            ("invoices", "billed-invoices"),
        ]:
            small.goto(f"{scene.base_url}/portal/acme-inc/{path}")
            assert small.evaluate("document.documentElement.scrollWidth") == 375, name
            screenshot(small, tmp_path, f"portal-{name}-phone.png")
        phone.close()


# --- payments ---------------------------------------------------------------------------------


@dataclass
class PaymentScene:
    base_url: str
    acme_secret: str
    invoice_id: str
    invoice_number: str
    total: int  # cents


@pytest.fixture
def payment_scene(live_server, transactional_db, token_for, stripe_settings) -> PaymentScene:
    world = build_world(token_for)
    _, invoice = subscribe(world.alice)
    return PaymentScene(
        base_url=live_server.url,
        acme_secret=world.acme.secret,
        invoice_id=str(invoice.pk),
        invoice_number=invoice.number,
        total=int(invoice.total.amount * 100),
    )


def test_add_a_card_through_the_stripe_js_stand_in_then_pay_now(
    payment_scene, stripe_settings, tmp_path
):
    scene = payment_scene
    base = f"{scene.base_url}/portal/acme-inc"
    with Polar(scene.acme_secret, base_url=scene.base_url) as polar, chromium() as browser:
        page = browser.new_page(viewport=DESKTOP)
        page.goto(polar.customer_sessions.create(external_customer_id="alice").customer_portal_url)
        page.get_by_role("link", name="Payment method").click()
        page.wait_for_url(f"{base}/payment-method")
        assert page.locator('[data-field="card-description"]').inner_text() == "No card on file."

        # the card element is localstripe's stand-in for Stripe.js, loaded from localstripe
        page.get_by_role("link", name="Add card").click()
        page.wait_for_url(f"{base}/payment-method/new")
        element = page.locator("#card-element")
        for placeholder, value in [
            ("number", "4242424242424242"),
            ("exp_month", "12"),
            ("exp_year", "34"),
            ("cvc", "123"),
            ("postal_code", "75001"),
        ]:
            element.get_by_placeholder(placeholder, exact=True).fill(value)
        screenshot(page, tmp_path, "portal-add-card-desktop.png")
        page.get_by_role("button", name="Save card").click()
        page.wait_for_url(f"{base}/payment-method?saved=1")
        assert page.locator('[data-field="card-description"]').inner_text() == (
            "Visa ending in 4242, expires 12/2034"
        )

        # "Pay now" on the open invoice in the list; the invoice page shows it paid
        page.get_by_role("link", name="Invoices").click()
        page.wait_for_url(f"{base}/invoices")
        page.get_by_role("button", name=f"Pay now invoice {scene.invoice_number}").click()
        page.wait_for_url(re.compile(rf"{re.escape(base)}/invoices/{scene.invoice_id}\?payment="))
        result = page.locator('[data-field="payment-result"]')
        assert result.get_attribute("data-value") == "paid"
        assert page.locator('[data-field="status"]').inner_text() == "Paid"
        screenshot(page, tmp_path, "portal-paid-invoice-desktop.png")

        # phone: the payment pages fit 375 px
        phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
        small = phone.new_page()
        small.goto(polar.customer_sessions.create(external_customer_id="alice").customer_portal_url)
        for path, name in [
            ("payment-method", "payment-method"),
            ("payment-method/new", "add-card"),
            ("invoices", "invoices-paid"),
        ]:
            small.goto(f"{base}/{path}")
            assert small.evaluate("document.documentElement.scrollWidth") == 375, name
            screenshot(small, tmp_path, f"portal-{name}-phone.png")
        phone.close()

    invoice = Invoice.objects.get(pk=scene.invoice_id)
    assert invoice.status == "paid"
    profile = BillingProfile.objects.get(customer=invoice.customer)
    assert profile.last4 == "4242"
    charges = stripe_settings.succeeded_charges(profile.provider_customer_id)
    assert [(c.amount, c.currency) for c in charges] == [(scene.total, "usd")]
    assert scene.total == 2900
