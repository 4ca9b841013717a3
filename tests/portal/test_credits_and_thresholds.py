"""The portal shows a subscription's spend threshold (what is not invoiced yet, the threshold
invoices of the period) and each meter's prepaid credit grants (what is left, their expiry, in
the order they are used), set up through billing's services and checked against the API."""

import re
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone
from moneyed import Money
from rest_framework.test import APIClient

from billing import credits, invoices, subscriptions, thresholds
from billing.catalog import PriceSpec, create_product
from billing.models import Invoice
from customers.services import create_customer
from metering import meters
from metering.ingest import ingest_events

from .conftest import portal_path

TOKENS_FILTER = {
    "conjunction": "and",
    "clauses": [{"property": "name", "operator": "eq", "value": "llm.completion"}],
}


def plan_customer(token_for, *, spend_threshold=None):
    """A customer on a plan of 1 cent per token (no fixed price, no tax)."""
    organization, secret = token_for("Thresholds Co")
    tokens = meters.create_meter(
        organization=organization,
        name="Tokens",
        filter=TOKENS_FILTER,
        aggregation={"func": "sum", "property": "tokens"},
        unit="token",
    )
    customer = create_customer(
        organization=organization, email="dana@example.com", external_id="dana", name="Dana"
    )
    product = create_product(
        organization=organization,
        name="Pay as you go",
        prices=[PriceSpec(amount_type="metered_unit", meter_id=tokens.pk, unit_amount=Decimal(1))],
    )
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, spend_threshold=spend_threshold
    )
    return organization, secret, tokens, customer, subscription


def send(organization, *amounts):
    ingest_events(
        organization=organization,
        events=[
            {"name": "llm.completion", "external_customer_id": "dana", "metadata": {"tokens": n}}
            for n in amounts
        ],
    )


def text(html: str, field: str) -> list[str]:
    found = re.findall(rf'data-field="{field}"[^>]*>(.*?)</(?:strong|p|li)>', html, re.S)
    return [re.sub(r"<[^>]+>", "", f).replace("\xa0", " ").strip() for f in found]


def test_spend_threshold_and_what_is_not_invoiced_yet(db, token_for, signed_in):
    organization, secret, _, customer, subscription = plan_customer(
        token_for, spend_threshold=Money("50.00", "USD")
    )
    send(organization, 5000)
    (issued,) = thresholds.check(customer_ids=[customer.pk])
    assert issued.total.amount == Decimal("50.00")
    send(organization, 1234)  # $12.34 since, below the threshold
    assert thresholds.check(customer_ids=[customer.pk]) == []

    html = signed_in(customer).get(portal_path(customer, "subscriptions")).content.decode()
    assert "We invoice your usage whenever it reaches" in html
    assert text(html, "threshold-amount") == ["$50.00"]
    assert text(html, "uninvoiced") == ["$12.34"]
    assert text(html, "threshold-invoiced") == ["$50.00"]
    day = issued.finalized_at
    assert text(html, "threshold-invoice") == [
        f"{issued.number} · {day.day} {day:%b %Y} · $50.00 · Open"
    ]
    assert f'href="/portal/{organization.slug}/invoices/{issued.pk}"' in html

    # the API's numbers: the threshold in force, the period's amount and what was invoiced of it
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = api.get(f"/v1/subscriptions/{subscription.pk}").json()
    (meter,) = body["meters"]
    assert (body["spend_threshold_amount"], meter["amount"], meter["invoiced_amount"]) == (
        5000,
        6234,
        5000,
    )


def test_a_voided_threshold_invoice_is_not_listed(db, token_for, signed_in):
    organization, _, _, customer, _ = plan_customer(
        token_for, spend_threshold=Money("50.00", "USD")
    )
    send(organization, 6000)
    (issued,) = thresholds.check(customer_ids=[customer.pk])
    invoices.void(issued)
    html = signed_in(customer).get(portal_path(customer, "subscriptions")).content.decode()
    # the void gives the usage back: all of it is not invoiced again
    assert text(html, "uninvoiced") == ["$60.00"]
    assert text(html, "threshold-invoiced") == ["Nothing invoiced early this period yet."]
    assert Invoice.objects.get(pk=issued.pk).status == "void"


def test_no_threshold_no_section(db, token_for, signed_in):
    organization, _, _, customer, _ = plan_customer(token_for)
    send(organization, 10)
    html = signed_in(customer).get(portal_path(customer, "subscriptions")).content.decode()
    assert 'data-field="threshold"' not in html and "We invoice your usage" not in html


def test_credit_grants_with_what_is_left_earliest_expiry_first(db, token_for, signed_in):
    organization, _, tokens, customer, _ = plan_customer(token_for)
    now = timezone.now()
    late, soon = now + timedelta(days=400), now + timedelta(days=20)
    credits.grant(customer=customer, meter=tokens, units=1000, expires_at=late)
    credits.grant(customer=customer, meter=tokens, units=500, expires_at=soon)
    credits.grant(customer=customer, meter=tokens, units=300)  # never expires
    expired = credits.grant(
        customer=customer,
        meter=tokens,
        units=900,
        granted_at=now - timedelta(days=10),
        expires_at=now - timedelta(days=1),
    )
    other = create_customer(organization=organization, email="eve@example.com", external_id="eve")
    credits.grant(customer=other, meter=tokens, units=77)
    send(organization, 700)

    html = signed_in(customer).get(portal_path(customer)).content.decode()
    # 700 tokens: the 20-day grant's 500 first, then 200 of the 400-day one
    assert text(html, "grant") == [
        f"500 credits, 0 left, expire {soon.day} {soon:%b %Y}",
        f"1,000 credits, 800 left, expire {late.day} {late:%b %Y}",
        "300 credits, 300 left, no expiry",
    ]
    # the card's credits left is the same 800 + 300
    assert re.findall(r'data-field="balance" data-value="([^"]+)"', html) == ["1100"]
    assert str(expired.units) not in "".join(text(html, "grant"))
    # the polled block shows them too
    block = signed_in(customer).get(portal_path(customer, "usage/meters")).content.decode()
    assert len(text(block, "grant")) == 3
