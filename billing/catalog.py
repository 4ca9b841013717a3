"""Catalog services: products with their prices, and meter-credit benefits."""

import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.db import transaction

from billing import usage
from billing.errors import InvalidPrice
from billing.models import Benefit, InvoiceLine, Price, PriceType, Product
from billing.money import is_known_currency, to_money
from billing.pricing import GRADUATED, VOLUME

MAX_RATE_DECIMALS = 12


@dataclass
class PriceSpec:
    """A validated price to create: amounts in minor units, rates as exact decimals."""

    amount_type: str
    price_amount: int | None = None
    meter_id: object = None
    unit_amount: Decimal | None = None
    tiers: dict | None = None
    cap_amount: int | None = None
    loc: tuple = field(default=())


def parse_rate(value, loc) -> Decimal:
    """A rate in minor units: a JSON number or a decimal string, ≥ 0, at most 12 decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidPrice("Input should be a number or a decimal string", field=loc)
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise InvalidPrice("Input should be a decimal number", field=loc)
    if not rate.is_finite() or rate < 0:
        raise InvalidPrice("Input should be a finite number ≥ 0", field=loc)
    if -rate.as_tuple().exponent > MAX_RATE_DECIMALS:
        raise InvalidPrice(f"At most {MAX_RATE_DECIMALS} decimal places", field=loc)
    # canonical and without an exponent: '200', '0.5' (Decimal.normalize() would give '2E+2')
    return Decimal(format(rate.normalize(), "f")) if rate else Decimal(0)


def _minor_amount(value, loc) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPrice("Input should be a non-negative integer (cents)", field=loc)
    return value


def normalize_tiers(data, loc) -> dict:
    """Check a tiers object and return it in the stored shape (rates as decimal strings)."""
    if not isinstance(data, dict):
        raise InvalidPrice("Input should be an object", field=loc)
    kind = data.get("type")
    if kind not in (GRADUATED, VOLUME):
        raise InvalidPrice("Input should be 'graduated' or 'volume'", field=(*loc, "type"))
    tiers = data.get("tiers")
    if not isinstance(tiers, list) or not tiers:
        raise InvalidPrice("At least one tier is required", field=(*loc, "tiers"))
    out, previous = [], 0
    for index, tier in enumerate(tiers):
        tier_loc = (*loc, "tiers", index)
        if not isinstance(tier, dict):
            raise InvalidPrice("Input should be an object", field=tier_loc)
        bound = tier.get("bound")
        last = index == len(tiers) - 1
        if bound is None and not last:
            raise InvalidPrice("Only the last tier may be unbounded", field=(*tier_loc, "bound"))
        if bound is not None:
            if isinstance(bound, bool) or not isinstance(bound, int) or bound <= previous:
                raise InvalidPrice(
                    f"Bound should be an integer greater than {previous}",
                    field=(*tier_loc, "bound"),
                )
            previous = bound
        if last and bound is not None:
            raise InvalidPrice(
                "The last tier must be unbounded (bound: null)", field=(*tier_loc, "bound")
            )
        if "unit_amount" not in tier:
            raise InvalidPrice("Field required", field=(*tier_loc, "unit_amount"))
        rate = parse_rate(tier["unit_amount"], (*tier_loc, "unit_amount"))
        flat = tier.get("flat_amount")
        entry = {"bound": bound, "unit_amount": format(rate, "f")}
        if flat is not None:
            entry["flat_amount"] = _minor_amount(flat, (*tier_loc, "flat_amount"))
        out.append(entry)
    return {"type": kind, "tiers": out}


def check_prices(*, organization, specs: list[PriceSpec], loc=("body", "prices")) -> None:
    """Catalog rules: at most one fixed price, a meter at most once, meters of this organization
    and not archived."""
    fixed = [spec for spec in specs if spec.amount_type == PriceType.FIXED]
    if len(fixed) > 1:
        raise InvalidPrice("A product has at most one fixed price", field=fixed[1].loc or loc)
    seen = set()
    for spec in specs:
        if spec.amount_type == PriceType.FIXED:
            continue
        meter = usage.organization_meter(organization, spec.meter_id)
        if meter is None or meter.archived_at is not None:
            raise InvalidPrice("Meter not found (or archived)", field=(*spec.loc, "meter_id"))
        if spec.meter_id in seen:
            raise InvalidPrice(
                "A meter appears at most once per product", field=(*spec.loc, "meter_id")
            )
        seen.add(spec.meter_id)


def _price_fields(spec: PriceSpec, currency: str) -> dict:
    return {
        "amount_type": spec.amount_type,
        "price_amount": to_money(spec.price_amount, currency)
        if spec.price_amount is not None
        else None,
        "meter_id": spec.meter_id,
        "unit_amount": spec.unit_amount,
        "tiers": spec.tiers,
        "cap_amount": to_money(spec.cap_amount, currency) if spec.cap_amount is not None else None,
    }


@transaction.atomic
def create_product(
    *,
    organization,
    name: str,
    prices: list[PriceSpec],
    currency: str = "USD",
    description: str | None = None,
    recurring_interval: str = "month",
    recurring_interval_count: int = 1,
    trial_interval: str | None = None,
    trial_interval_count: int | None = None,
    metadata: dict | None = None,
) -> Product:
    check_prices(organization=organization, specs=prices)
    product = Product.objects.create(
        organization=organization,
        name=name,
        description=description,
        currency=currency.upper(),
        recurring_interval=recurring_interval,
        recurring_interval_count=recurring_interval_count,
        trial_interval=trial_interval,
        trial_interval_count=trial_interval_count,
        metadata=metadata or {},
    )
    for spec in prices:
        Price.objects.create(product=product, **_price_fields(spec, product.currency))
    return product


@transaction.atomic
def replace_prices(*, product: Product, prices: list[PriceSpec], keep_ids: list) -> None:
    """Polar's product update: the given list is the new set of prices. Existing prices listed
    by id stay; others are archived (subscriptions keep the prices they had); new ones are
    created."""
    kept = list(product.prices.filter(is_archived=False, pk__in=keep_ids))
    if len(kept) != len(set(keep_ids)):
        raise InvalidPrice("Price not found on this product", field=("body", "prices"))
    kept_specs = [
        PriceSpec(amount_type=p.amount_type, meter_id=p.meter_id, loc=("body", "prices"))
        for p in kept
    ]
    check_prices(organization=product.organization, specs=kept_specs + prices)
    product.prices.filter(is_archived=False).exclude(pk__in=keep_ids).update(is_archived=True)
    for spec in prices:
        Price.objects.create(product=product, **_price_fields(spec, product.currency))


def set_benefits(*, product: Product, benefit_ids: list) -> Product:
    benefits = list(
        Benefit.objects.filter(
            organization=product.organization_id, pk__in=benefit_ids, is_deleted=False
        )
    )
    if len(benefits) != len(set(benefit_ids)):
        raise InvalidPrice("Benefit not found", field=("body", "benefits"))
    product.benefits.set(benefits)
    return product


def create_benefit(
    *, organization, description: str, meter_id, units: int, rollover: bool, metadata=None
) -> Benefit:
    meter = usage.organization_meter(organization, meter_id)
    if meter is None or meter.archived_at is not None:
        raise InvalidPrice(
            "Meter not found (or archived)", field=("body", "properties", "meter_id")
        )
    return Benefit.objects.create(
        organization=organization,
        description=description,
        meter=meter,
        units=units,
        rollover=rollover,
        metadata=metadata or {},
    )


PRICE_KEYS = {
    PriceType.FIXED: {"price_amount"},
    PriceType.METERED_UNIT: {"meter_id", "unit_amount", "cap_amount"},
    PriceType.METERED_TIERS: {"meter_id", "tiers", "cap_amount"},
}
COMMON_KEYS = {"amount_type", "price_currency", "tax_behavior"}


def _uuid(value, loc):
    try:
        return uuid.UUID(str(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def parse_price_input(data, loc) -> tuple[PriceSpec, str | None]:
    """One price of Polar's create shapes → (PriceSpec, currency named or None)."""
    if not isinstance(data, dict):
        raise InvalidPrice("Input should be an object", field=loc)
    amount_type = data.get("amount_type")
    if amount_type not in PRICE_KEYS:
        raise InvalidPrice(
            "amount_type should be 'fixed', 'metered_unit' or 'metered_tiers'",
            field=(*loc, "amount_type"),
        )
    for key in data:
        if key not in PRICE_KEYS[amount_type] | COMMON_KEYS:
            raise InvalidPrice("Extra inputs are not permitted", field=(*loc, key))
    currency = data.get("price_currency")
    if currency is not None and not is_known_currency(currency):
        raise InvalidPrice(
            "Input should be an ISO 4217 currency code", field=(*loc, "price_currency")
        )
    spec = PriceSpec(amount_type=amount_type, loc=tuple(loc))
    if amount_type == PriceType.FIXED:
        if "price_amount" not in data:
            raise InvalidPrice("Field required", field=(*loc, "price_amount"))
        spec.price_amount = _minor_amount(data["price_amount"], (*loc, "price_amount"))
        return spec, currency
    meter_id = _uuid(data.get("meter_id"), loc)
    if meter_id is None:
        raise InvalidPrice("Input should be a valid UUID", field=(*loc, "meter_id"))
    spec.meter_id = meter_id
    if data.get("cap_amount") is not None:
        spec.cap_amount = _minor_amount(data["cap_amount"], (*loc, "cap_amount"))
    if amount_type == PriceType.METERED_UNIT:
        if "unit_amount" not in data:
            raise InvalidPrice("Field required", field=(*loc, "unit_amount"))
        spec.unit_amount = parse_rate(data["unit_amount"], (*loc, "unit_amount"))
    else:
        if "tiers" not in data:
            raise InvalidPrice("Field required", field=(*loc, "tiers"))
        spec.tiers = normalize_tiers(data["tiers"], (*loc, "tiers"))
    return spec, currency


def parse_prices_input(items: list, *, loc=("body", "prices"), currency: str | None = None):
    """A product's price list → (specs, existing price ids kept, the product's currency)."""
    specs, keep, currencies = [], [], set()
    for index, item in enumerate(items):
        item_loc = (*loc, index)
        if isinstance(item, dict) and set(item) == {"id"}:
            price_id = _uuid(item["id"], item_loc)
            if price_id is None:
                raise InvalidPrice("Input should be a valid UUID", field=(*item_loc, "id"))
            keep.append(price_id)
            continue
        spec, named = parse_price_input(item, item_loc)
        if named:
            currencies.add(named.upper())
        specs.append(spec)
    if currency:
        currencies.add(currency.upper())
    if len(currencies) > 1:
        raise InvalidPrice("All prices of a product share one currency", field=loc)
    return specs, keep, (currencies.pop() if currencies else "USD")


def meter_definition_blockers(meter) -> list[str]:
    """A meter whose usage is on a finalized invoice keeps its definition (the invoice would no
    longer be explainable by it)."""
    if InvoiceLine.objects.filter(meter=meter).exclude(invoice__status="draft").exists():
        return ["The meter's usage is on a finalized invoice; create a new meter instead."]
    return []


def meter_archive_blockers(meter) -> list[str]:
    reasons = []
    if Price.objects.filter(meter=meter, is_archived=False, product__is_archived=False).exists():
        reasons.append("An active price uses this meter; archive the price or product first.")
    if Benefit.objects.filter(meter=meter, is_deleted=False).exists():
        reasons.append("A meter-credit benefit uses this meter; delete the benefit first.")
    return reasons
