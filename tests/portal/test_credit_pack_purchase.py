"""Buying a credit pack in the portal: the usage page offers the packs of its meters (price,
credits, expiry) with a "Buy" button once a card is saved; a click issues the order and charges
the saved card through localstripe at once, the units are granted; a declined card leaves one
unpaid order that a second click leads back to; other organizations' and non-pack products are
not found."""

import re
from datetime import timedelta

import pytest

from billing import catalog
from billing.catalog import PriceSpec
from billing.models import BillingReason, CreditGrant, Invoice, InvoiceStatus
from payments import methods
from payments.models import Payment, PaymentStatus

from .conftest import DECLINED, GOOD, portal_path

pytestmark = pytest.mark.django_db


def make_pack(tenant, *, name="1,000 calls", price=1250, days=30):
    benefit = catalog.create_benefit(
        organization=tenant.organization,
        description=name,
        meter_id=tenant.calls.pk,
        units=1000,
        rollover=False,
        expires_after_days=days,
    )
    return catalog.create_product(
        organization=tenant.organization,
        name=name,
        recurring_interval=None,
        prices=[PriceSpec(amount_type="fixed", price_amount=price)],
        benefit_ids=[benefit.pk],
    )


def text(html: str, field: str) -> list[str]:
    found = re.findall(rf'data-field="{field}"[^>]*>(.*?)</(?:li|strong)>', html, re.S)
    return [re.sub(r"<[^>]+>", "", v).replace("\xa0", " ").strip() for v in found]


def buy(client, customer, product):
    return client.post(portal_path(customer, f"credit-packs/{product.pk}/buy"))


def test_buy_a_pack_charged_to_the_saved_card(world, signed_in, stripe_settings):
    alice = world.alice
    pack = make_pack(world.acme)
    make_pack(world.globex, name="Globex calls")  # another organization's: never offered
    client = signed_in(alice)

    html = client.get(portal_path(alice, "")).content.decode()
    assert "Buy credits" in html and "Globex calls" not in html
    assert text(html, "pack-credits") == ["1,000 API calls credits, expire 30 days after purchase"]
    assert text(html, "pack-price") == ["$12.50"]
    assert 'data-action="buy-pack"' not in html and "Add a card to buy" in html

    methods.set_default_method(alice, stripe_settings.card(GOOD))
    html = client.get(portal_path(alice, "")).content.decode()
    assert 'data-action="buy-pack"' in html and "ending in 4242" in html

    response = buy(client, alice, pack)
    order = Invoice.objects.get(customer=alice, billing_reason=BillingReason.PURCHASE)
    (payment,) = Payment.objects.filter(invoice=order)
    assert response.status_code == 302
    assert response["Location"] == portal_path(alice, f"invoices/{order.pk}?payment={payment.pk}")
    assert (payment.status, payment.amount) == (PaymentStatus.SUCCEEDED, 1250)
    order.refresh_from_db()
    assert order.status == InvoiceStatus.PAID
    (grant,) = CreditGrant.objects.filter(customer=alice)
    assert (grant.units, grant.meter_id) == (1000, world.acme.calls.pk)
    assert grant.expires_at - grant.granted_at == timedelta(days=30)
    page = client.get(response["Location"]).content.decode()
    assert 'data-value="paid"' in page

    # a second pack is a second order and charge
    buy(client, alice, pack)
    assert Payment.objects.filter(status=PaymentStatus.SUCCEEDED, amount=1250).count() == 2
    assert CreditGrant.objects.filter(customer=alice).count() == 2


def test_a_declined_card_leaves_one_unpaid_order(world, signed_in, stripe_settings):
    bob = world.bob
    pack = make_pack(world.acme)
    methods.set_default_method(bob, stripe_settings.card(DECLINED))
    client = signed_in(bob)
    response = buy(client, bob, pack)
    order = Invoice.objects.get(customer=bob, billing_reason=BillingReason.PURCHASE)
    (payment,) = Payment.objects.filter(invoice=order)
    assert payment.status == PaymentStatus.FAILED
    assert response["Location"].endswith(f"invoices/{order.pk}?payment={payment.pk}")
    # the second click leads to the unpaid order: no second order, no second charge
    again = buy(client, bob, pack)
    assert again["Location"] == portal_path(bob, f"invoices/{order.pk}")
    assert Invoice.objects.filter(customer=bob, billing_reason=BillingReason.PURCHASE).count() == 1
    assert Payment.objects.filter(invoice=order).count() == 1
    assert not CreditGrant.objects.exists()


def test_only_the_organizations_packs_can_be_bought(world, signed_in, stripe_settings):
    alice = world.alice
    theirs = make_pack(world.globex, name="Globex calls")
    monthly = catalog.create_product(
        organization=world.acme.organization,
        name="Monthly",
        recurring_interval="month",
        prices=[PriceSpec(amount_type="fixed", price_amount=1000)],
    )
    methods.set_default_method(alice, stripe_settings.card(GOOD))
    client = signed_in(alice)
    assert buy(client, alice, theirs).status_code == 404
    assert buy(client, alice, monthly).status_code == 404
    ours = make_pack(world.acme)
    path = portal_path(alice, f"credit-packs/{ours.pk}/buy")
    assert client.get(path).status_code == 405
    assert buy(signed_in(world.carol), alice, ours).status_code == 404  # signed in elsewhere
    assert not Invoice.objects.filter(billing_reason=BillingReason.PURCHASE).exists()
    assert not Payment.objects.exists()


def test_the_same_form_sent_twice_buys_once(world, signed_in, stripe_settings):
    """A double click (or a form resent by the browser's back button) after the first order was
    paid: its purchase key leads to that order instead of a second charge."""
    alice = world.alice
    pack = make_pack(world.acme)
    methods.set_default_method(alice, stripe_settings.card(GOOD))
    client = signed_in(alice)
    html = client.get(portal_path(alice, "")).content.decode()
    (key,) = re.findall(r'name="purchase_key" value="([^"]+)"', html)
    path = portal_path(alice, f"credit-packs/{pack.pk}/buy")
    first = client.post(path, {"purchase_key": key})
    again = client.post(path, {"purchase_key": key})
    order = Invoice.objects.get(customer=alice, billing_reason=BillingReason.PURCHASE)
    assert first["Location"].startswith(portal_path(alice, f"invoices/{order.pk}?payment="))
    assert again["Location"] == portal_path(alice, f"invoices/{order.pk}")
    assert Payment.objects.filter(invoice=order).count() == 1
    assert CreditGrant.objects.filter(customer=alice).count() == 1
    # the next page shown has a new key: a second pack is a second order
    html = client.get(portal_path(alice, "")).content.decode()
    (next_key,) = re.findall(r'name="purchase_key" value="([^"]+)"', html)
    assert next_key != key
    client.post(path, {"purchase_key": next_key})
    assert (
        Invoice.objects.filter(customer=alice, billing_reason=BillingReason.PURCHASE).count() == 2
    )
