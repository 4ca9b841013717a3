"""Two organizations with meters and customers, and test clients signed in to the portal the
way a browser is: by opening a customer_portal_url."""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from billing import cycles, discounts, subscriptions, taxes
from billing.catalog import PriceSpec, create_product
from billing.models import Invoice, InvoiceStatus, Subscription
from customers.models import Customer, Organization
from customers.services import create_customer
from metering import meters
from metering.ingest import ingest_events
from metering.models import Meter
from portal import sign_in
from tests import localstripe as ls

CALLS_FILTER = {
    "conjunction": "and",
    "clauses": [{"property": "name", "operator": "eq", "value": "api.call"}],
}
TOKENS_FILTER = {
    "conjunction": "and",
    "clauses": [{"property": "name", "operator": "eq", "value": "llm.completion"}],
}


@pytest.fixture(autouse=True)
def _isolated_side_effects():
    """Tasks run in the process that enqueues them (the sign-in email lands in mail.outbox even
    when a live server thread sends it)."""
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    # (the rate-limit counters are rows of the test database, which every test starts empty)
    yield
    app.conf.task_always_eager = previous


@dataclass
class Tenant:
    organization: Organization
    secret: str
    calls: Meter
    tokens: Meter


def make_tenant(token_for, name: str, accent: str = "#2563eb") -> Tenant:
    organization, secret = token_for(name)
    organization.accent_color = accent
    organization.save(update_fields=["accent_color"])
    calls = meters.create_meter(
        organization=organization,
        name="API calls",
        filter=CALLS_FILTER,
        aggregation={"func": "count"},
    )
    tokens = meters.create_meter(
        organization=organization,
        name="Tokens",
        filter=TOKENS_FILTER,
        aggregation={"func": "sum", "property": "tokens"},
        unit="token",
    )
    return Tenant(organization, secret, calls, tokens)


def add_customer(tenant: Tenant, external_id: str, *, calls: int, tokens: list) -> Customer:
    customer = create_customer(
        organization=tenant.organization,
        email=f"{external_id}@{tenant.organization.slug}.example",
        external_id=external_id,
        name=external_id.title(),
    )
    events = [{"name": "api.call", "external_customer_id": external_id} for _ in range(calls)]
    events += [
        {"name": "llm.completion", "external_customer_id": external_id, "metadata": {"tokens": t}}
        for t in tokens
    ]
    if events:
        ingest_events(organization=tenant.organization, events=events)
    return customer


@dataclass
class World:
    acme: Tenant
    globex: Tenant
    alice: Customer  # Acme
    bob: Customer  # Acme
    carol: Customer  # Globex
    alice_sub: Subscription | None = None  # set by add_billing
    carol_sub: Subscription | None = None


def build_world(token_for) -> World:
    acme = make_tenant(token_for, "Acme Inc", "#ffd700")
    globex = make_tenant(token_for, "Globex", "#0f766e")
    return World(
        acme=acme,
        globex=globex,
        alice=add_customer(acme, "alice", calls=3, tokens=[100, 250]),
        bob=add_customer(acme, "bob", calls=5, tokens=[7]),
        carol=add_customer(globex, "carol", calls=2, tokens=[40]),
    )


def plan(tenant, name="Pro"):
    return create_product(
        organization=tenant.organization,
        name=name,
        prices=[
            PriceSpec(amount_type="fixed", price_amount=1999),
            PriceSpec(
                amount_type="metered_unit", meter_id=tenant.calls.pk, unit_amount=Decimal(25)
            ),
            PriceSpec(
                amount_type="metered_unit", meter_id=tenant.tokens.pk, unit_amount=Decimal("0.5")
            ),
        ],
    )


def add_billing(world: World) -> World:
    """Alice (Acme) on a monthly plan started 35 days ago (its first period closed: one create
    and one cycle invoice), 10 % off forever, French VAT 20 %, and one API call of the closed
    period that arrived after its close (late). Carol (Globex) has her own subscription."""
    acme = world.acme
    now = timezone.now()
    taxes.create_tax_rate(
        organization=acme.organization,
        name="TVA",
        country="FR",
        state=None,
        basis_points=2000,
        inclusive=False,
    )
    world.alice.billing_address = {"country": "FR"}
    world.alice.save()
    ten_off = discounts.create_discount(
        organization=acme.organization,
        name="Ten off",
        type="percentage",
        basis_points=1000,
        duration="forever",
    )
    alice_sub = subscriptions.create_subscription(
        customer=world.alice,
        product=plan(acme),
        started_at=now - timedelta(days=35),
        discount=ten_off,
    )
    cycles.close_due(as_of=now)
    alice_sub.refresh_from_db()
    late = alice_sub.current_period_start - timedelta(days=2)
    ingest_events(
        organization=acme.organization,
        events=[
            {"name": "api.call", "external_customer_id": "alice", "timestamp": late.isoformat()}
        ],
    )
    carol_sub = subscriptions.create_subscription(
        customer=world.carol, product=plan(world.globex, "Globex Pro")
    )
    world.alice_sub, world.carol_sub = alice_sub, carol_sub
    return world


@pytest.fixture
def world(db, token_for) -> World:
    return build_world(token_for)


def portal_path(customer: Customer, rest: str = "") -> str:
    return f"/portal/{customer.organization.slug}/{rest}"


def open_portal(client: Client, customer: Customer):
    """Sign `client` in as `customer` through an API customer session; returns the response."""
    _, _, url = sign_in.create_api_session(
        customer=customer, return_url=None, base_url="http://testserver/"
    )
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


@pytest.fixture
def signed_in():
    def make(customer: Customer, **client_kwargs) -> Client:
        client = Client(**client_kwargs)
        response = open_portal(client, customer)
        assert response.status_code == 302, response.content[:300]
        return client

    return make


# --- payments -------------------------------------------------------------------------------

GOOD, DECLINED = "4242424242424242", "4000000000000341"


@pytest.fixture
def stripe_settings(settings, localstripe):
    """Stripe through the session's localstripe; invoices are emailed and paid from the portal
    (`send_invoice`), so nothing is charged before "Pay now"."""
    settings.STRIPE_SECRET_KEY = ls.SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = ls.PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = ls.WEBHOOK_SECRET
    settings.STRIPE_API_BASE = localstripe.url
    settings.STRIPE_JS_URL = ""
    settings.PAYMENTS_COLLECTION = "send_invoice"
    settings.DUNNING_SCHEDULE = [2, 5, 7, 7]
    settings.PAYMENTS_RECONCILE_AFTER = 300
    return localstripe


def subscribe(customer, amount: int = 2900):
    """A $29 plan: its creation invoice (2900) is open, not yet charged."""
    product = create_product(
        organization=customer.organization,
        name=f"Plan {customer.external_id}",
        prices=[PriceSpec(amount_type="fixed", price_amount=amount)],
    )
    subscription = subscriptions.create_subscription(customer=customer, product=product)
    (invoice,) = Invoice.objects.filter(subscription=subscription)
    assert (invoice.status, invoice.total.amount * 100) == (InvoiceStatus.OPEN, amount)
    return subscription, invoice
