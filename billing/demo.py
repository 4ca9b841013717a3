"""Billing demo data for `seed_demo`: a catalog over the demo meters, subscriptions (most
backdated so closed invoices exist), a discount and tax rates, then a cycle close."""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from billing import catalog, cycles, discounts, subscriptions, taxes
from billing.catalog import PriceSpec
from billing.models import Benefit, Discount, Product, Subscription, TaxRate
from metering.models import Meter

PRODUCTS = ("Starter", "Growth", "Scale")


def _meter(organization, name):
    meter = Meter.objects.filter(organization=organization, name=name).first()
    if meter is None:
        raise LookupError(f"demo meter {name!r} is missing")
    return meter


def ensure_catalog(organization) -> dict:
    requests = _meter(organization, "API requests")
    tokens = _meter(organization, "LLM tokens")
    existing = {
        p.name: p for p in Product.objects.filter(organization=organization, name__in=PRODUCTS)
    }
    if len(existing) == len(PRODUCTS):
        return existing
    credits, _ = Benefit.objects.get_or_create(
        organization=organization,
        description="1,000 API requests a month",
        defaults={"meter": requests, "units": 1000, "rollover": True},
    )
    specs = {
        "Starter": [
            PriceSpec(amount_type="fixed", price_amount=1900),
            PriceSpec(amount_type="metered_unit", meter_id=requests.pk, unit_amount=Decimal("0.5")),
        ],
        "Growth": [
            PriceSpec(amount_type="fixed", price_amount=9900),
            PriceSpec(amount_type="metered_unit", meter_id=requests.pk, unit_amount=Decimal("0.2")),
            PriceSpec(
                amount_type="metered_tiers",
                meter_id=tokens.pk,
                tiers={
                    "type": "graduated",
                    "tiers": [
                        {"bound": 1_000_000, "unit_amount": "0.0002", "flat_amount": 0},
                        {"bound": None, "unit_amount": "0.0001", "flat_amount": 500},
                    ],
                },
            ),
        ],
        "Scale": [
            PriceSpec(
                amount_type="metered_tiers",
                meter_id=requests.pk,
                tiers={
                    "type": "volume",
                    "tiers": [
                        {"bound": 10_000, "unit_amount": "0.3", "flat_amount": 5000},
                        {"bound": None, "unit_amount": "0.2", "flat_amount": 5000},
                    ],
                },
                cap_amount=500_000,
            ),
        ],
    }
    for name, prices in specs.items():
        if name not in existing:
            existing[name] = catalog.create_product(
                organization=organization,
                name=name,
                description=f"The {name} plan (demo)",
                prices=prices,
            )
    existing["Starter"].benefits.add(credits)
    return existing


def seed(organization, customers) -> str:
    products = ensure_catalog(organization)
    if not TaxRate.objects.filter(organization=organization).exists():
        taxes.create_tax_rate(
            organization=organization,
            name="TVA",
            country="FR",
            state=None,
            basis_points=2000,
            inclusive=False,
        )
        taxes.create_tax_rate(
            organization=organization,
            name="MwSt",
            country="DE",
            state=None,
            basis_points=1900,
            inclusive=True,
        )
    launch = Discount.objects.filter(organization=organization, code="LAUNCH10").first()
    if launch is None:
        launch = discounts.create_discount(
            organization=organization,
            name="Launch 10%",
            type="percentage",
            basis_points=1000,
            duration="repeating",
            duration_in_months=3,
            code="LAUNCH10",
        )
    subscribed = set(
        Subscription.objects.filter(organization=organization).values_list("customer_id", flat=True)
    )
    now = timezone.now()
    plans = [products["Starter"], products["Growth"], products["Scale"]]
    created = 0
    for index, customer in enumerate(customers[:18]):
        if customer.pk in subscribed:
            continue
        if index % 4 == 1 and not customer.billing_address:
            customer.billing_address = {"country": ("FR", "DE")[index % 2]}
            customer.save(update_fields=["billing_address"])
        # most are backdated (moved from another system): their past periods get invoices
        started = now - timedelta(days=75 - index * 3) if index % 3 else now - timedelta(days=index)
        subscriptions.create_subscription(
            customer=customer,
            product=plans[index % 3],
            started_at=started,
            discount=launch if index % 5 == 0 else None,
        )
        created += 1
    report = cycles.close_due()
    return (
        f"Billing: {len(products)} products, {created} subscriptions created, "
        f"{report.closed} periods closed."
    )


def on_demo_seeded(sender, organization, customers, **kwargs) -> str:
    return seed(organization, customers)
