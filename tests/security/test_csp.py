"""A Content-Security-Policy on admin and portal pages (django-csp): scripts from this site only (no
inline script, no eval), styles from files or <style> elements carrying the response's nonce,
no framing. Checked on the HTML of each page, and in Chromium, which reports any violation."""

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client

from portal import sign_in
from tests.portal.conftest import add_billing, build_world, open_portal
from tests.portal.test_browser import chromium

ADMIN_PAGES = [
    "/admin/",
    "/admin/metering/meter/add/",
    "/admin/customers/customer/",
    "/admin/billing/invoice/",
    "/admin/billing/subscription/",
    "/admin/auditlog/logentry/",
]
PORTAL_PAGES = ["", "subscriptions", "invoices", "sign-in"]


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


def assert_page_keeps_the_policy(response) -> None:
    assert response.status_code == 200, response.content[:300]
    directives = policy(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    scripts = directives["script-src"]
    assert "'self'" in scripts
    assert not {"'unsafe-inline'", "'unsafe-eval'", "*"} & set(scripts)
    html = response.content.decode()
    # every script is a file (a src); no handler attributes (onclick=…), no javascript: URLs
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html)
    assert "javascript:" not in html
    # every <style> element carries the nonce the header allows
    styles = re.findall(r"<style\b[^>]*>", html)
    if styles:
        (nonce_source,) = [s for s in directives["style-src"] if s.startswith("'nonce-")]
        nonce = nonce_source[len("'nonce-") : -1]
        for tag in styles:
            assert f'nonce="{nonce}"' in tag, tag
    else:
        assert not [s for s in directives["style-src"] if s.startswith("'nonce-")]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages(admin_client, path):
    assert_page_keeps_the_policy(admin_client.get(path))


@pytest.mark.django_db
def test_admin_sign_in_page():
    assert_page_keeps_the_policy(Client().get("/admin/login/"))


@pytest.mark.django_db
@pytest.mark.parametrize("rest", PORTAL_PAGES)
def test_portal_pages(token_for, rest):
    world = add_billing(build_world(token_for))
    client = Client()
    open_portal(client, world.alice)
    response = client.get(f"/portal/{world.acme.organization.slug}/{rest}")
    assert_page_keeps_the_policy(response)
    if rest == "":
        # the accent colour comes in a <style> element: it has to carry the nonce
        assert "<style nonce=" in response.content.decode()


@pytest.mark.django_db
def test_card_form_allows_the_payment_providers_script_only(token_for, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:8420"
    world = build_world(token_for)
    client = Client()
    open_portal(client, world.alice)
    directives = policy(client.get(f"/portal/{world.acme.organization.slug}/"))
    assert directives["script-src"] == ["'self'", "http://127.0.0.1:8420"]
    assert "http://127.0.0.1:8420" in directives["connect-src"]
    assert "https://js.stripe.com" in directives["frame-src"]


# --- in a browser ---------------------------------------------------------------------------

VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def test_no_violation_in_chromium_on_portal_and_admin_pages(
    live_server, transactional_db, token_for, django_user_model
):
    """The pages work under the policy: htmx polls the meters, the admin's meter editor and
    change lists load — and Chromium reports no blocked script, style or eval."""
    world = add_billing(build_world(token_for))
    _, _, portal_url = sign_in.create_api_session(
        customer=world.alice, return_url=None, base_url=f"{live_server.url}/"
    )
    django_user_model.objects.create_user(
        "ops", password="pw-for-ops", is_staff=True, is_superuser=True
    )
    slug = world.acme.organization.slug
    seen = {}
    with chromium() as browser:
        page = browser.new_context().new_page()
        page.add_init_script(VIOLATIONS)
        page.goto(portal_url)
        page.locator("#meters").wait_for()
        # a poll comes and is swapped in (htmx under the policy)
        with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/usage/meters")):
            pass
        seen["usage"] = page.evaluate("window.__violations")
        for rest in ("subscriptions", "invoices"):
            page.goto(f"{live_server.url}/portal/{slug}/{rest}")
            seen[rest] = page.evaluate("window.__violations")
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", "pw-for-ops")
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        seen["admin"] = page.evaluate("window.__violations")
        for path in ADMIN_PAGES[1:]:
            page.goto(f"{live_server.url}{path}")
            seen[path] = page.evaluate("window.__violations")
    assert seen == {name: [] for name in seen}
