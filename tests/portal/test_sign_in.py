"""Portal sign-in with the Django test client: API customer sessions, emailed links, the session
cookie, expiry, sign-out, CSRF and rate limits."""

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from portal import sign_in
from portal.auth import COOKIE_NAME
from portal.models import PortalSession, SignInToken, SignInTokenKind

from .conftest import open_portal, portal_path


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_customer_portal_url_signs_in_once(world):
    client = Client()
    _, token, url = sign_in.create_api_session(
        customer=world.alice,
        return_url="https://app.example/settings",
        base_url="http://testserver/",
    )
    assert url == f"http://testserver/portal/acme-inc/session?customer_session_token={token}"

    response = client.get(relative(url))
    assert response.status_code == 302
    assert response["Location"] == "/portal/acme-inc/"
    cookie = response.cookies[COOKIE_NAME]
    assert cookie["path"] == "/portal/acme-inc/"
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["max-age"] == 12 * 3600

    page = client.get("/portal/acme-inc/")
    assert page.status_code == 200
    assert page["Cache-Control"].startswith("max-age=0") or "no-cache" in page["Cache-Control"]
    html = page.content.decode()
    assert "alice@acme-inc.example" in html
    assert 'href="https://app.example/settings"' in html  # Polar's return_url: a way back

    # The token is spent: opening the URL again (any browser) is refused.
    again = Client().get(relative(url))
    assert again.status_code == 404
    assert "This link has expired" in again.content.decode()
    assert COOKIE_NAME not in again.cookies
    assert PortalSession.objects.filter(customer=world.alice).count() == 1


def test_expired_customer_session_token_is_refused(world):
    row, _, url = sign_in.create_api_session(
        customer=world.alice, return_url=None, base_url="http://testserver/"
    )
    SignInToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = Client().get(relative(url))
    assert response.status_code == 404
    assert not PortalSession.objects.exists()


def test_token_only_works_in_its_own_organizations_portal(world):
    row, token, _ = sign_in.create_api_session(
        customer=world.alice, return_url=None, base_url="http://testserver/"
    )
    response = Client().get(f"/portal/globex/session?customer_session_token={token}")
    assert response.status_code == 404
    # Not consumed by the wrong portal: it still works where it belongs.
    row.refresh_from_db()
    assert row.used_at is None
    assert (
        Client().get(f"/portal/acme-inc/session?customer_session_token={token}").status_code == 302
    )


def test_garbage_tokens_are_refused(world):
    client = Client()
    for token in ["", "x", "ml_cst_" + "a" * 43, "' OR 1=1 --"]:
        response = client.get("/portal/acme-inc/session", {"customer_session_token": token})
        assert response.status_code == 404
    assert client.get("/portal/no-such-org/session?customer_session_token=x").status_code == 404


def test_without_session_pages_redirect_to_sign_in_and_fragments_are_404(world):
    client = Client()
    response = client.get("/portal/acme-inc/")
    assert response.status_code == 302
    assert response["Location"] == "/portal/acme-inc/sign-in?next=%2Fportal%2Facme-inc%2F"
    assert client.get("/portal/acme-inc/usage/meters").status_code == 404
    htmx = client.get("/portal/acme-inc/usage/meters", headers={"HX-Request": "true"})
    assert htmx.status_code == 404
    assert htmx["HX-Redirect"] == "/portal/acme-inc/sign-in"


def test_session_expires(world, signed_in):
    client = signed_in(world.alice)
    assert client.get("/portal/acme-inc/").status_code == 200
    PortalSession.objects.filter(customer=world.alice).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert client.get("/portal/acme-inc/").status_code == 302
    assert client.get("/portal/acme-inc/usage/meters").status_code == 404


def test_tampered_cookie_is_ignored(world, signed_in):
    client = signed_in(world.alice)
    value = client.cookies[COOKIE_NAME].value
    other = PortalSession.objects.create(
        customer=world.bob, expires_at=timezone.now() + timedelta(hours=1)
    )
    # Swap in another session's id while keeping the old signature.
    forged = str(other.pk) + value[value.index(":") :]
    client.cookies[COOKIE_NAME] = forged
    assert client.get("/portal/acme-inc/").status_code == 302
    client.cookies[COOKIE_NAME] = str(other.pk)  # unsigned
    assert client.get("/portal/acme-inc/").status_code == 302


def test_sign_out_ends_the_session(world, signed_in):
    client = signed_in(world.alice)
    stolen = client.cookies[COOKIE_NAME].value
    assert client.get("/portal/acme-inc/sign-out").status_code == 405
    response = client.post("/portal/acme-inc/sign-out")
    assert response.status_code == 302
    assert response["Location"] == "/portal/acme-inc/sign-in?signed_out=1"
    assert response.cookies[COOKIE_NAME].value == ""
    session = PortalSession.objects.get(customer=world.alice)
    assert session.ended_at is not None
    # The cookie value is worthless afterwards, even if it was copied before.
    replay = Client()
    replay.cookies[COOKIE_NAME] = stolen
    assert replay.get("/portal/acme-inc/").status_code == 302


def test_opening_a_new_url_replaces_the_previous_session(world):
    client = Client()
    open_portal(client, world.alice)
    open_portal(client, world.bob)
    html = client.get("/portal/acme-inc/").content.decode()
    assert "bob@acme-inc.example" in html and "alice@" not in html
    alice_session = PortalSession.objects.get(customer=world.alice)
    assert alice_session.ended_at is not None


def _request_link(client, slug, email, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(f"/portal/{slug}/sign-in", {"email": email})


def _link_from_outbox() -> str:
    return re.search(r"https?://\S+", mail.outbox[-1].body).group(0)


def test_magic_link_flow(world, django_capture_on_commit_callbacks):
    client = Client()
    form = client.get("/portal/acme-inc/sign-in")
    assert form.status_code == 200
    assert '<label for="id_email">Email address</label>' in form.content.decode()

    response = _request_link(
        client, "acme-inc", "ALICE@acme-inc.example", django_capture_on_commit_callbacks
    )
    assert response.status_code == 200
    assert "Check your email" in response.content.decode()
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@acme-inc.example"]
    assert message.subject == "Your sign-in link for Acme Inc"
    link = _link_from_outbox()
    assert link.startswith("http://testserver/portal/acme-inc/sign-in/link?token=ml_csl_")
    assert "next=" not in link
    assert "expires in 15 minutes" in message.body

    # Opening the link (or a mail scanner fetching it) does not use it up...
    confirm = client.get(relative(link))
    assert confirm.status_code == 200
    token = re.search(r'name="token" value="([^"]+)"', confirm.content.decode()).group(1)
    assert SignInToken.objects.get(kind=SignInTokenKind.EMAIL_LINK).used_at is None
    # ...pressing Continue does, once.
    signed = client.post("/portal/acme-inc/sign-in/link", {"token": token})
    assert signed.status_code == 302 and signed["Location"] == "/portal/acme-inc/"
    assert "alice@acme-inc.example" in client.get("/portal/acme-inc/").content.decode()
    assert Client().post("/portal/acme-inc/sign-in/link", {"token": token}).status_code == 404


def test_magic_link_answer_is_the_same_for_unknown_addresses(
    world, django_capture_on_commit_callbacks
):
    def page(email):
        response = _request_link(Client(), "acme-inc", email, django_capture_on_commit_callbacks)
        html = response.content.decode().replace(email, "EMAIL")
        # the CSRF token and the CSP nonce differ on every response
        return response.status_code, re.sub(
            r'value="[^"]+" name="csrfmiddlewaretoken"|name="csrfmiddlewaretoken" value="[^"]+"'
            r'|nonce="[^"]+"|"inlineStyleNonce": "[^"]+"',
            "",
            html,
        )

    known = page("alice@acme-inc.example")
    unknown = page("nobody@acme-inc.example")
    other_org = page("carol@globex.example")  # a customer, but of another organization
    assert known == unknown == other_org
    assert [m.to for m in mail.outbox] == [["alice@acme-inc.example"]]


def test_magic_link_expires_and_deleted_customers_get_none(
    world, django_capture_on_commit_callbacks
):
    client = Client()
    _request_link(client, "acme-inc", "bob@acme-inc.example", django_capture_on_commit_callbacks)
    token = _link_from_outbox().split("token=")[1]
    SignInToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.post("/portal/acme-inc/sign-in/link", {"token": token}).status_code == 404

    from customers.services import delete_customer

    delete_customer(customer=world.bob)
    _request_link(client, "acme-inc", "bob@acme-inc.example", django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 1


def test_api_token_is_not_an_email_link_and_vice_versa(world):
    _, token, _ = sign_in.create_api_session(
        customer=world.alice, return_url=None, base_url="http://testserver/"
    )
    assert Client().post("/portal/acme-inc/sign-in/link", {"token": token}).status_code == 404


def test_invalid_email_is_a_form_error(world):
    response = Client().post("/portal/acme-inc/sign-in", {"email": "not-an-email"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'aria-invalid="true"' in html and 'id="email-error"' in html


def test_every_form_requires_csrf(world, signed_in):
    client = signed_in(world.alice, enforce_csrf_checks=True)
    assert client.post("/portal/acme-inc/sign-out").status_code == 403
    assert client.post("/portal/acme-inc/sign-in", {"email": "a@b.example"}).status_code == 403
    assert client.post("/portal/acme-inc/sign-in/link", {"token": "x"}).status_code == 403
    # and with the token the page carries, sign-out works
    page = client.get("/portal/acme-inc/").content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert (
        client.post("/portal/acme-inc/sign-out", {"csrfmiddlewaretoken": csrf}).status_code == 302
    )


def test_sign_in_requests_are_rate_limited_per_address_and_per_ip(
    world, settings, django_capture_on_commit_callbacks
):
    settings.PORTAL_SIGN_IN_RATE_PER_EMAIL = "2/600"
    settings.PORTAL_SIGN_IN_RATE_PER_IP = "4/600"
    client = Client()
    codes = [
        _request_link(
            client, "acme-inc", "alice@acme-inc.example", django_capture_on_commit_callbacks
        ).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    assert len(mail.outbox) == 2
    limited = _request_link(
        client, "acme-inc", "alice@acme-inc.example", django_capture_on_commit_callbacks
    )
    assert 1 <= int(limited["Retry-After"]) <= 600
    assert "Too many sign-in requests" in limited.content.decode()
    # Per IP: a fifth request from this address is refused whatever the email.
    assert (
        _request_link(
            client, "acme-inc", "new@acme-inc.example", django_capture_on_commit_callbacks
        ).status_code
        == 429
    )
    other_ip = Client(REMOTE_ADDR="10.1.2.3")
    assert (
        _request_link(
            other_ip, "acme-inc", "bob@acme-inc.example", django_capture_on_commit_callbacks
        ).status_code
        == 200
    )


def test_next_only_leads_inside_the_portal(world):
    from portal.views import _safe_next

    assert (
        _safe_next(world.acme.organization, "/portal/acme-inc/usage/meters")
        == "/portal/acme-inc/usage/meters"
    )
    for bad in [
        "https://evil.example/",
        "//evil.example/portal/acme-inc/",
        "/portal/globex/",
        "/admin/",
    ]:
        assert _safe_next(world.acme.organization, bad) == "/portal/acme-inc/"


@pytest.mark.parametrize("ttl_attr", ["PORTAL_API_TOKEN_TTL_SECONDS"])
def test_api_session_expiry_comes_from_settings(world, settings, ttl_attr):
    settings.PORTAL_API_TOKEN_TTL_SECONDS = 120
    before = timezone.now()
    row, _, _ = sign_in.create_api_session(
        customer=world.alice, return_url=None, base_url="http://x/"
    )
    assert timedelta(seconds=119) <= row.expires_at - before <= timedelta(seconds=121)


def test_clear_expired(world, signed_in):
    signed_in(world.alice)
    live_token, _, _ = sign_in.create_api_session(
        customer=world.bob, return_url=None, base_url="http://x/"
    )
    dead_token, _, _ = sign_in.create_api_session(
        customer=world.bob, return_url=None, base_url="http://x/"
    )
    SignInToken.objects.filter(pk=dead_token.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    expired_session = PortalSession.objects.create(
        customer=world.bob, expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert sign_in.clear_expired() == (1, 1)
    assert not PortalSession.objects.filter(pk=expired_session.pk).exists()
    assert SignInToken.objects.filter(pk=live_token.pk).exists()
    assert PortalSession.objects.filter(customer=world.alice).count() == 1


def test_portal_path_helper(world):
    assert portal_path(world.carol, "sign-in") == "/portal/globex/sign-in"


def test_magic_link_returns_to_the_page_asked_for(world, django_capture_on_commit_callbacks):
    client = Client()
    wanted = f"/portal/acme-inc/meters/{world.alice.customer_meters.first().pk}/chart"
    assert client.get(wanted).status_code == 404  # fragments never redirect
    asked = client.get("/portal/acme-inc/")
    assert asked["Location"] == "/portal/acme-inc/sign-in?next=%2Fportal%2Facme-inc%2F"
    form = client.get(asked["Location"]).content.decode()
    assert '<input type="hidden" name="next" value="/portal/acme-inc/"' in form
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/portal/acme-inc/sign-in", {"email": "alice@acme-inc.example", "next": wanted})
    link = _link_from_outbox()
    assert link.endswith("&next=" + wanted.replace("/", "%2F"))
    confirm = client.get(relative(link)).content.decode()
    token = re.search(r'name="token" value="([^"]+)"', confirm).group(1)
    assert f'name="next" value="{wanted}"' in confirm
    response = client.post("/portal/acme-inc/sign-in/link", {"token": token, "next": wanted})
    assert response["Location"] == wanted
    assert client.get(wanted).status_code == 200


def test_magic_link_never_leads_outside_the_portal(world, django_capture_on_commit_callbacks):
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/portal/acme-inc/sign-in",
            {"email": "alice@acme-inc.example", "next": "https://evil.example/"},
        )
    link = _link_from_outbox()
    assert link.endswith("&next=%2Fportal%2Facme-inc%2F")
    token = link.split("token=")[1].split("&")[0]
    response = client.post(
        "/portal/acme-inc/sign-in/link", {"token": token, "next": "//evil.example/"}
    )
    assert response["Location"] == "/portal/acme-inc/"
