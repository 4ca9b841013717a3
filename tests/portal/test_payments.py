"""The portal's payments with Django's test client, charging through the real `stripe` library
against localstripe: the payment method page (a setup session confirmed at the provider as the
card element would, then saved), "Pay now" with a card that pays and one that is declined, the
past-due banner, credit notes, and every payment URL closed to other customers."""

import re
import subprocess
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing import credit_notes
from billing.models import Invoice, InvoiceStatus, SubscriptionStatus
from payments import refunds
from payments.models import BillingProfile, Payment, PaymentStatus, PaymentTrigger

from .conftest import DECLINED, GOOD, portal_path, subscribe


def fields(html: str, name: str) -> list[str]:
    return [
        v.replace("\xa0", "") for v in re.findall(rf'data-field="{name}"[^>]*>(.*?)</', html, re.S)
    ]


def add_card(client: Client, customer, localstripe, number: str):
    """What the card form does in a browser: open it (a setup session is created for the
    customer), confirm the session at the provider with the card, post the session's id."""
    page = client.get(portal_path(customer, "payment-method/new"))
    assert page.status_code == 200
    html = page.content.decode()
    assert f'src="{localstripe.url}/js.stripe.com/v3/"' in html
    secret = re.search(r'data-client-secret="([^"]+)"', html).group(1)
    setup_id = secret.split("_secret_")[0]
    confirmed = localstripe.client.v1.setup_intents.confirm(
        setup_id, params={"payment_method": localstripe.card(number)}
    )
    assert confirmed.status == "succeeded"
    return client.post(portal_path(customer, "payment-method"), {"setup_intent": setup_id})


def provider_customer(customer) -> str:
    return BillingProfile.objects.get(customer=customer).provider_customer_id


@pytest.fixture
def alice(world, stripe_settings):
    return world.alice


def test_payment_method_page_shows_none_then_the_saved_card(alice, signed_in, stripe_settings):
    client = signed_in(alice)
    html = client.get(portal_path(alice, "payment-method")).content.decode()
    assert fields(html, "card-description") == ["No card on file."]
    assert 'data-action="add-card"' in html
    assert 'href="/portal/acme-inc/payment-method"' in html  # in the navigation

    response = add_card(client, alice, stripe_settings, GOOD)
    assert response.status_code == 302
    assert response["Location"] == portal_path(alice, "payment-method?saved=1")
    html = client.get(response["Location"]).content.decode()
    assert fields(html, "brand") == ["Visa"]
    assert fields(html, "last4") == ["4242"]
    assert fields(html, "expiry") == ["12/2034"]
    assert 'data-action="replace-card"' in html
    profile = BillingProfile.objects.get(customer=alice)
    (method,) = stripe_settings.client.v1.payment_methods.list(
        params={"customer": profile.provider_customer_id, "type": "card"}
    ).data
    assert profile.default_method_id == method.id

    # replacing it: the new card is the default
    assert add_card(client, alice, stripe_settings, DECLINED).status_code == 302
    html = client.get(portal_path(alice, "payment-method")).content.decode()
    assert fields(html, "last4") == ["0341"]


def test_saving_needs_a_confirmed_session_of_this_customer(world, signed_in, stripe_settings):
    alice, bob = world.alice, world.bob
    alice_client, bob_client = signed_in(alice), signed_in(bob)
    # bob's confirmed session, posted by alice: not hers, a 404, nothing saved
    page = bob_client.get(portal_path(bob, "payment-method/new")).content.decode()
    bob_setup = re.search(r'data-client-secret="(seti_\w+?)_secret_', page).group(1)
    stripe_settings.client.v1.setup_intents.confirm(
        bob_setup, params={"payment_method": stripe_settings.card(GOOD)}
    )
    alice_client.get(portal_path(alice, "payment-method/new"))  # alice has a provider customer
    response = alice_client.post(portal_path(alice, "payment-method"), {"setup_intent": bob_setup})
    assert response.status_code == 404
    assert not BillingProfile.objects.get(customer=alice).default_method_id
    # an unknown id, a malformed one, an unconfirmed session
    unknown = alice_client.post(portal_path(alice, "payment-method"), {"setup_intent": "seti_x"})
    assert unknown.status_code == 404
    malformed = alice_client.post(portal_path(alice, "payment-method"), {"setup_intent": "a/b"})
    assert malformed.status_code == 400
    page = alice_client.get(portal_path(alice, "payment-method/new")).content.decode()
    pending = re.search(r'data-client-secret="(seti_\w+?)_secret_', page).group(1)
    refused = alice_client.post(portal_path(alice, "payment-method"), {"setup_intent": pending})
    assert refused.status_code == 400
    assert "The card was not confirmed" in refused.content.decode()
    assert not BillingProfile.objects.get(customer=alice).default_method_id
    # bob's own id saves for bob
    assert (
        bob_client.post(portal_path(bob, "payment-method"), {"setup_intent": bob_setup})
    ).status_code == 302
    assert BillingProfile.objects.get(customer=bob).last4 == "4242"


def test_payment_posts_need_the_csrf_token_and_a_session(alice, signed_in):
    _, invoice = subscribe(alice)
    client = signed_in(alice, enforce_csrf_checks=True)
    assert client.post(portal_path(alice, f"invoices/{invoice.pk}/pay")).status_code == 403
    assert (
        client.post(portal_path(alice, "payment-method"), {"setup_intent": "seti_x"}).status_code
        == 403
    )
    anonymous = Client()
    assert anonymous.post(portal_path(alice, f"invoices/{invoice.pk}/pay")).status_code == 404
    assert anonymous.get(portal_path(alice, "payment-method")).status_code == 302  # sign in


def test_pay_now_with_a_good_card_charges_the_total_once(alice, signed_in, stripe_settings):
    subscription, invoice = subscribe(alice)
    client = signed_in(alice)
    add_card(client, alice, stripe_settings, GOOD)
    html = client.get(portal_path(alice, "invoices")).content.decode()
    assert f'action="/portal/acme-inc/invoices/{invoice.pk}/pay"' in html

    response = client.post(portal_path(alice, f"invoices/{invoice.pk}/pay"))
    assert response.status_code == 302
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert response["Location"] == portal_path(alice, f"invoices/{invoice.pk}?payment={payment.pk}")
    assert (payment.status, payment.amount, payment.trigger) == (
        PaymentStatus.SUCCEEDED,
        2900,
        PaymentTrigger.RETRY_CUSTOMER,
    )
    html = client.get(response["Location"]).content.decode()
    assert re.search(r'data-field="payment-result" data-value="paid"', html)
    assert fields(html, "status") == ["Paid"]
    assert 'data-action="pay-now"' not in html
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    charges = stripe_settings.succeeded_charges(provider_customer(alice))
    assert [(c.amount, c.currency) for c in charges] == [(2900, "usd")]

    # a second click finds it paid: nothing more is charged
    again = client.post(portal_path(alice, f"invoices/{invoice.pk}/pay"))
    assert again["Location"].endswith("?refused=not_open")
    assert len(stripe_settings.succeeded_charges(provider_customer(alice))) == 1
    assert Payment.objects.filter(invoice=invoice).count() == 1


def test_pay_now_with_a_declined_card_shows_the_decline(alice, signed_in, stripe_settings):
    subscription, invoice = subscribe(alice)
    client = signed_in(alice)
    add_card(client, alice, stripe_settings, DECLINED)
    response = client.post(portal_path(alice, f"invoices/{invoice.pk}/pay"))
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert payment.status == PaymentStatus.FAILED
    html = client.get(response["Location"]).content.decode()
    assert re.search(r'data-field="payment-result" data-value="failed"', html)
    assert fields(html, "decline-message") == [payment.decline_message]
    assert payment.decline_message  # the provider's words, e.g. "Your card was declined."
    assert 'href="/portal/acme-inc/payment-method">Use another card' in html
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    assert 'data-action="pay-now"' in html  # still payable
    assert stripe_settings.succeeded_charges(provider_customer(alice)) == []


def test_no_card_links_to_the_payment_page(alice, signed_in):
    _, invoice = subscribe(alice)
    client = signed_in(alice)
    html = client.get(portal_path(alice, f"invoices/{invoice.pk}")).content.decode()
    assert 'data-action="pay-now"' not in html
    assert re.search(r'<a href="/portal/acme-inc/payment-method" data-action="add-card">', html)
    response = client.post(portal_path(alice, f"invoices/{invoice.pk}/pay"))
    assert response["Location"].endswith("?refused=no_method")
    html = client.get(response["Location"]).content.decode()
    assert "There is no card to charge" in fields(html, "payment-refusal")[0]
    assert not Payment.objects.filter(invoice=invoice).exists()


def test_other_customers_invoices_and_payments_are_not_found(world, signed_in, stripe_settings):
    alice, bob, carol = world.alice, world.bob, world.carol
    _, bob_invoice = subscribe(bob)
    _, carol_invoice = subscribe(carol)
    _, alice_invoice = subscribe(alice)
    bob_client = signed_in(bob)
    add_card(bob_client, bob, stripe_settings, GOOD)
    bob_client.post(portal_path(bob, f"invoices/{bob_invoice.pk}/pay"))
    (bob_payment,) = Payment.objects.filter(invoice=bob_invoice)

    client = signed_in(alice)
    add_card(client, alice, stripe_settings, GOOD)
    for invoice in (bob_invoice, carol_invoice):
        assert client.post(portal_path(alice, f"invoices/{invoice.pk}/pay")).status_code == 404
    # carol's invoice under her own organization's portal: alice has no session there
    assert client.post(portal_path(carol, f"invoices/{carol_invoice.pk}/pay")).status_code == 404
    # another invoice's payment shows nothing on alice's invoice
    html = client.get(
        portal_path(alice, f"invoices/{alice_invoice.pk}?payment={bob_payment.pk}")
    ).content.decode()
    assert 'data-field="payment-result"' not in html
    assert Payment.objects.filter(invoice__in=[carol_invoice, alice_invoice]).count() == 0
    assert Invoice.objects.get(pk=carol_invoice.pk).status == InvoiceStatus.OPEN


def test_past_due_banner_shows_what_is_at_risk_and_when_it_is_retried(
    world, signed_in, stripe_settings, settings, django_capture_on_commit_callbacks
):
    alice = world.alice
    # automatic collection with no card: the creation invoice fails, the subscription is past due
    settings.PAYMENTS_COLLECTION = "automatic"
    client = signed_in(alice)
    for page in ("", "invoices", "payment-method"):
        html = client.get(portal_path(alice, page)).content.decode()
        assert 'data-banner="past-due"' not in html
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):  # the collection task
        subscription, invoice = subscribe(alice)
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.PAST_DUE
    for page in ("", "subscriptions", "invoices", "payment-method", f"invoices/{invoice.pk}"):
        html = client.get(portal_path(alice, page)).content.decode()
        assert 'data-banner="past-due"' in html, page
        assert fields(html, "amount-at-risk") == ["$29.00"]
        retry = re.search(r'data-field="next-retry" datetime="([^"]+)"', html).group(1)
        assert before + timedelta(days=2) <= timezone.datetime.fromisoformat(retry)
        assert timezone.datetime.fromisoformat(retry) <= timezone.now() + timedelta(days=2)
        assert f'href="/portal/acme-inc/invoices/{invoice.pk}">Pay now' in html
    # another customer of the organization sees no banner
    html = signed_in(world.bob).get(portal_path(world.bob)).content.decode()
    assert 'data-banner="past-due"' not in html

    # a good card: the invoice is retried at once, paid, and the banner is gone
    response = add_card(client, alice, stripe_settings, GOOD)
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.PAID
    html = client.get(portal_path(alice, "payment-method?saved=1")).content.decode()
    assert 'data-banner="past-due"' not in html
    charges = stripe_settings.succeeded_charges(provider_customer(alice))
    assert [c.amount for c in charges] == [2900]


def test_payment_actions_are_rate_limited_per_customer(alice, signed_in, settings):
    settings.PORTAL_PAYMENT_RATE_PER_CUSTOMER = "2/3600"
    _, invoice = subscribe(alice)
    client = signed_in(alice)
    url = portal_path(alice, f"invoices/{invoice.pk}/pay")
    assert [client.post(url).status_code for _ in range(3)] == [302, 302, 429]
    limited = client.post(url)
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0


def test_refunds_and_credit_notes_are_listed_and_downloadable(world, signed_in, stripe_settings):
    alice, bob = world.alice, world.bob
    _, invoice = subscribe(alice)
    client = signed_in(alice)
    add_card(client, alice, stripe_settings, GOOD)
    client.post(portal_path(alice, f"invoices/{invoice.pk}/pay"))
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    html = client.get(portal_path(alice, "invoices")).content.decode()
    assert fields(html, "status") == ["Paid"]
    assert "Credit notes" not in html

    first = credit_notes.issue(invoice, amount=1000, kind="refund", reason="customer_request")
    html = client.get(portal_path(alice, "invoices")).content.decode()
    assert fields(html, "status") == ["Partially refunded"]
    assert fields(html, "refunded") == ["$10.00"]
    assert fields(html, "credit-note-number") == [first.number]
    page = client.get(portal_path(alice, f"invoices/{invoice.pk}")).content.decode()
    assert fields(page, "status") == ["Partially refunded"]
    assert fields(page, "refunded") == ["$10.00"]

    second = credit_notes.issue(invoice, amount=1900, kind="refund", reason="customer_request")
    assert (first.number, second.number) == ("ACMEIN-CN-0001", "ACMEIN-CN-0002")
    html = client.get(portal_path(alice, "invoices")).content.decode()
    assert fields(html, "status") == ["Refunded"]
    assert fields(html, "refunded") == ["$29.00"]
    assert fields(html, "credit-note-number") == [second.number, first.number]
    assert fields(html, "credit-note-amount") == ["$19.00", "$10.00"]
    assert fields(html, "credit-note-kind") == ["Refund", "Refund"]

    response = client.get(portal_path(alice, f"credit-notes/{first.pk}/download"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="ACMEIN-CN-0001.pdf"'
    text = subprocess.run(
        ["pdftotext", "-", "-"], input=response.content, capture_output=True, check=True
    ).stdout.decode()
    assert "ACMEIN-CN-0001" in text and "10.00" in text

    # bob's credit note (account credit on his open invoice) is his alone
    _, bob_invoice = subscribe(bob)
    bobs = credit_notes.issue(bob_invoice, amount=500, kind="balance", reason="other")
    assert client.get(portal_path(alice, f"credit-notes/{bobs.pk}/download")).status_code == 404
    assert bobs.number not in client.get(portal_path(alice, "invoices")).content.decode()
    bob_html = signed_in(bob).get(portal_path(bob, "invoices")).content.decode()
    assert fields(bob_html, "credit-note-number") == [bobs.number]
    assert fields(bob_html, "credit-note-kind") == ["Account credit"]
    assert Client().get(portal_path(alice, f"credit-notes/{first.pk}/download")).status_code == 404


def test_the_invoice_page_lists_its_refunds_with_their_credit_notes(
    world, signed_in, stripe_settings
):
    alice = world.alice
    _, invoice = subscribe(alice)
    client = signed_in(alice)
    add_card(client, alice, stripe_settings, GOOD)
    client.post(portal_path(alice, f"invoices/{invoice.pk}/pay"))
    invoice.refresh_from_db()
    page = client.get(portal_path(alice, f"invoices/{invoice.pk}")).content.decode()
    assert 'data-section="refunds"' not in page

    first = refunds.create_refund(invoice, amount=1000, reason="customer_request")
    second = refunds.create_refund(invoice, amount=1900, reason="duplicate")
    page = client.get(portal_path(alice, f"invoices/{invoice.pk}")).content.decode()
    assert fields(page, "refund-amount") == ["$10.00", "$19.00"]
    assert fields(page, "refund-status") == ["Succeeded", "Succeeded"]
    assert fields(page, "refund-reason") == ["Customer request", "Duplicate"]
    assert fields(page, "refund-credit-note") == [
        first.credit_note.number,
        second.credit_note.number,
    ]
    assert f"credit-notes/{first.credit_note.pk}/download" in page
