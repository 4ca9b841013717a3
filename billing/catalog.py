"""Catalog services: products with their prices, and meter-credit benefits. The API and the
admin both change the catalog through these functions, which own its rules:

- prices: a fixed price (0 … 99,999,999 minor units, Polar's bound), metered prices of one of
  the organization's meters (unit amounts ≥ 0 with at most 12 decimals and 17 digits, tiers,
  caps), at most one live fixed price and a meter at most once per product;
- a price in use (by a subscription or an invoice) is never edited in place: a change archives
  it and creates its replacement, so what was sold keeps its terms;
- a product's billing interval can't change while a live subscription (or a scheduled plan
  change) uses it, and its currency is fixed at creation.

A staff user's edits of prices (the admin's `change_prices`) are in the audit log (core.audit):
each price added, changed or removed, with its terms before and after."""

import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.db import transaction
from moneyed import Money

from billing.errors import InvalidPrice, InvalidProduct
from billing.models import (
    LIVE_STATUSES,
    Benefit,
    InvoiceLine,
    PendingInvoiceItem,
    Price,
    PriceType,
    Product,
    Subscription,
    SubscriptionPrice,
)
from billing.money import is_known_currency, to_minor, to_money
from billing.pricing import GRADUATED, VOLUME
from core import audit
from metering.models import Meter

MAX_RATE_DECIMALS = 12
MAX_RATE_DIGITS = 17  # Polar's unit_amount: 17 digits, 12 of them decimals (< 100,000 cents)
MAX_PRICE_AMOUNT = 99_999_999  # Polar's bound for price_amount (Stripe's per charge), in cents
MAX_TIER_BOUND = 10**40  # usage values are below 10^40 (events.md)
MAX_EXPIRY_DAYS = 36_500  # a credit pack's expiry in days: a hundred years keeps it a date


@dataclass
class PriceSpec:
    """A validated price to create: amounts in minor units, rates as exact decimals. `loc` is
    where the price sits in the caller's input (errors name it)."""

    amount_type: str
    price_amount: int | None = None
    meter_id: object = None
    unit_amount: Decimal | None = None
    tiers: dict | None = None
    cap_amount: int | None = None
    loc: tuple = field(default=())


def parse_rate(value, loc) -> Decimal:
    """A rate in minor units: a JSON number or a decimal string, ≥ 0, at most 12 decimals and 17
    digits."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidPrice("Input should be a number or a decimal string", field=loc)
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise InvalidPrice("Input should be a decimal number", field=loc)
    if not rate.is_finite() or rate < 0:
        raise InvalidPrice("Input should be a finite number ≥ 0", field=loc)
    if rate and -rate.as_tuple().exponent > MAX_RATE_DECIMALS:
        raise InvalidPrice(f"At most {MAX_RATE_DECIMALS} decimal places", field=loc)
    if rate >= Decimal(10) ** (MAX_RATE_DIGITS - MAX_RATE_DECIMALS):
        raise InvalidPrice(
            f"Input should be less than {10 ** (MAX_RATE_DIGITS - MAX_RATE_DECIMALS):,} (cents "
            f"per unit, at most {MAX_RATE_DIGITS} digits)",
            field=loc,
        )
    # canonical and without an exponent: '200', '0.5' (Decimal.normalize() would give '2E+2')
    return Decimal(format(rate.normalize(), "f")) if rate else Decimal(0)


def minor_amount(value, loc) -> int:
    """An amount in minor units (cents): a whole number from 0 to MAX_PRICE_AMOUNT."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPrice("Input should be a non-negative integer (cents)", field=loc)
    if value > MAX_PRICE_AMOUNT:
        raise InvalidPrice(
            f"Input should be less than or equal to {MAX_PRICE_AMOUNT} (cents)", field=loc
        )
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
    if len(tiers) > 100:
        raise InvalidPrice("At most 100 tiers", field=(*loc, "tiers"))
    out, previous = [], 0
    for index, tier in enumerate(tiers):
        tier_loc = (*loc, "tiers", index)
        if not isinstance(tier, dict):
            raise InvalidPrice("Input should be an object", field=tier_loc)
        unknown = set(tier) - {"bound", "unit_amount", "flat_amount"}
        if unknown:
            raise InvalidPrice("Extra inputs are not permitted", field=(*tier_loc, min(unknown)))
        bound = tier.get("bound")
        last = index == len(tiers) - 1
        if bound is None and not last:
            raise InvalidPrice("Only the last tier may be unbounded", field=(*tier_loc, "bound"))
        if bound is not None:
            if (
                isinstance(bound, bool)
                or not isinstance(bound, int)
                or not previous < bound < MAX_TIER_BOUND
            ):
                raise InvalidPrice(
                    f"Bound should be an integer greater than {previous} and below 10^40",
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
            entry["flat_amount"] = minor_amount(flat, (*tier_loc, "flat_amount"))
        out.append(entry)
    return {"type": kind, "tiers": out}


def organization_meter(organization, meter_id) -> Meter | None:
    if meter_id is None:
        return None
    return Meter.objects.filter(organization=organization, pk=meter_id).first()


def check_prices(*, organization, specs: list[PriceSpec], loc=("prices",)) -> None:
    """The set of a product's live prices: at most one fixed price, a meter at most once, meters
    of this organization and not archived."""
    fixed = [spec for spec in specs if spec.amount_type == PriceType.FIXED]
    if len(fixed) > 1:
        raise InvalidPrice("A product has at most one fixed price", field=fixed[1].loc or loc)
    seen = set()
    for spec in specs:
        if spec.amount_type == PriceType.FIXED:
            continue
        meter = organization_meter(organization, spec.meter_id)
        if meter is None or meter.archived_at is not None:
            raise InvalidPrice("Meter not found (or archived)", field=(*spec.loc, "meter_id"))
        if spec.meter_id in seen:
            raise InvalidPrice(
                "A meter appears at most once per product", field=(*spec.loc, "meter_id")
            )
        seen.add(spec.meter_id)


def _price_fields(spec: PriceSpec, currency: str) -> dict:
    def money(minor):
        return to_money(minor, currency) if minor is not None else None

    metered = spec.amount_type != PriceType.FIXED
    return {
        "amount_type": spec.amount_type,
        "price_amount": None if metered else money(spec.price_amount),
        "meter_id": spec.meter_id if metered else None,
        "unit_amount": spec.unit_amount if spec.amount_type == PriceType.METERED_UNIT else None,
        "tiers": spec.tiers if spec.amount_type == PriceType.METERED_TIERS else None,
        "cap_amount": money(spec.cap_amount) if metered else None,
    }


def spec_of(price: Price, loc=()) -> PriceSpec:
    """A stored price as a spec (to check a set of prices, or to compare terms)."""
    return PriceSpec(
        amount_type=price.amount_type,
        price_amount=to_minor(price.price_amount) if price.price_amount is not None else None,
        meter_id=price.meter_id,
        unit_amount=price.unit_amount,
        tiers=price.tiers,
        cap_amount=to_minor(price.cap_amount) if price.cap_amount is not None else None,
        loc=loc,
    )


def price_terms(price: Price) -> dict:
    """What an invoice line copies of its price (minor units, rates as decimal strings)."""
    spec = spec_of(price)
    return {
        "amount_type": spec.amount_type,
        "price_amount": spec.price_amount,
        "unit_amount": format(spec.unit_amount.normalize(), "f")
        if spec.unit_amount is not None
        else None,
        "tiers": spec.tiers,
        "cap_amount": spec.cap_amount,
    }


def _same_terms(price: Price, spec: PriceSpec) -> bool:
    stored = spec_of(price)
    return (
        stored.amount_type,
        stored.price_amount,
        stored.meter_id,
        stored.unit_amount,
        stored.tiers,
        stored.cap_amount,
    ) == (
        spec.amount_type,
        spec.price_amount if spec.amount_type == PriceType.FIXED else None,
        spec.meter_id if spec.amount_type != PriceType.FIXED else None,
        spec.unit_amount if spec.amount_type == PriceType.METERED_UNIT else None,
        spec.tiers if spec.amount_type == PriceType.METERED_TIERS else None,
        spec.cap_amount if spec.amount_type != PriceType.FIXED else None,
    )


def price_in_use(price: Price) -> bool:
    """Sold to a subscription or on an invoice: its terms are a promise."""
    return (
        SubscriptionPrice.objects.filter(price=price).exists()
        or InvoiceLine.objects.filter(price=price).exists()
        or PendingInvoiceItem.objects.filter(price=price).exists()
    )


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
    benefit_ids: list | None = None,
    spend_threshold: Money | None = None,
) -> Product:
    if not is_known_currency(currency):
        raise InvalidProduct("Input should be an ISO 4217 currency code", field=("currency",))
    check_spend_threshold(spend_threshold, currency.upper())
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
        spend_threshold=spend_threshold,
    )
    for spec in prices:
        Price.objects.create(product=product, **_price_fields(spec, product.currency))
    if benefit_ids:
        set_benefits(product=product, benefit_ids=benefit_ids)
    return product


PRODUCT_FIELDS = (
    "name",
    "description",
    "metadata",
    "is_archived",
    "trial_interval",
    "trial_interval_count",
    "recurring_interval",
    "recurring_interval_count",
    "currency",
    "spend_threshold",
)
BILLING_TERMS = ("recurring_interval", "recurring_interval_count")


def check_spend_threshold(threshold: Money | None, currency: str) -> None:
    """A product's default spend threshold: positive, in the product's currency."""
    if threshold is None:
        return
    if str(threshold.currency) != currency:
        raise InvalidProduct(
            f"The spend threshold must be in the product's currency ({currency})",
            field=("spend_threshold_amount",),
        )
    if threshold.amount <= 0:
        raise InvalidProduct(
            "A spend threshold is a positive amount", field=("spend_threshold_amount",)
        )


def product_in_use(product: Product) -> bool:
    """A live subscription bills it, or a scheduled plan change will."""
    return Subscription.objects.filter(product=product, status__in=LIVE_STATUSES).exists() or (
        Subscription.objects.filter(pending_product=product, status__in=LIVE_STATUSES).exists()
    )


def check_product_change(product: Product, changes: dict) -> list[str]:
    """The fields `changes` really changes, or InvalidProduct naming the first one refused."""
    for key in changes:
        if key not in PRODUCT_FIELDS:
            raise InvalidProduct("Unknown product field", field=(key,))
    changed = [key for key, value in changes.items() if getattr(product, key) != value]
    if "currency" in changed:
        raise InvalidProduct(
            "A product's currency is fixed at creation (its prices are in it); create a "
            "product in the other currency",
            field=("currency",),
        )
    terms = [key for key in changed if key in BILLING_TERMS]
    if terms and product_in_use(product):
        raise InvalidProduct(
            "The product's billing interval can't change while a live subscription uses it "
            "(its periods would move); create a new product and change the subscriptions' "
            "plan to it",
            field=(terms[0],),
        )
    if "spend_threshold" in changed:
        check_spend_threshold(changes["spend_threshold"], product.currency)
    if bool(changes.get("trial_interval", product.trial_interval)) != bool(
        changes.get("trial_interval_count", product.trial_interval_count)
    ):
        raise InvalidProduct(
            "trial_interval and trial_interval_count go together", field=("trial_interval_count",)
        )
    return changed


@transaction.atomic
def update_product(product: Product, **changes) -> Product:
    """Change a product's own fields (prices: `replace_prices` / `change_prices`)."""
    product = Product.objects.select_for_update().get(pk=product.pk)
    changed = check_product_change(product, changes)
    for key in changed:
        setattr(product, key, changes[key])
    if changed:
        product.save()
    return product


def _live_specs(product: Product, exclude=()) -> list[PriceSpec]:
    return [
        spec_of(price, loc=("prices",))
        for price in product.prices.filter(is_archived=False).exclude(pk__in=exclude)
    ]


@transaction.atomic
def replace_prices(*, product: Product, prices: list[PriceSpec], keep_ids: list) -> None:
    """Polar's product update: the given list is the new set of live prices. Prices listed by id
    stay; the others are archived (subscriptions keep the prices they have); new ones are
    created."""
    kept = list(product.prices.filter(is_archived=False, pk__in=keep_ids))
    if len(kept) != len(set(keep_ids)):
        raise InvalidPrice("Price not found on this product", field=("prices",))
    check_prices(
        organization=product.organization,
        specs=[spec_of(price, loc=("prices",)) for price in kept] + prices,
    )
    product.prices.filter(is_archived=False).exclude(pk__in=keep_ids).update(is_archived=True)
    for spec in prices:
        Price.objects.create(product=product, **_price_fields(spec, product.currency))


def _audited_terms(spec: PriceSpec, meter_names: dict) -> dict:
    """A price's terms as the audit log writes them: amounts in minor units, the meter by name,
    rates as plain decimals, tiers as JSON; None for a term its kind does not have."""
    metered = spec.amount_type != PriceType.FIXED
    rate = spec.unit_amount if spec.amount_type == PriceType.METERED_UNIT else None
    tiers = spec.tiers if spec.amount_type == PriceType.METERED_TIERS else None
    return {
        "amount_type": spec.amount_type,
        "price_amount": None if metered else spec.price_amount,
        "meter": meter_names.get(spec.meter_id) if metered else None,
        "unit_amount": None if rate is None else format(rate.normalize(), "f"),
        "tiers": None if tiers is None else json.dumps(tiers, sort_keys=True),
        "cap_amount": spec.cap_amount if metered else None,
    }


def _meter_names(specs) -> dict:
    ids = {spec.meter_id for spec in specs if spec.meter_id is not None}
    return dict(Meter.objects.filter(pk__in=ids).values_list("pk", "name")) if ids else {}


@transaction.atomic
def change_prices(
    *,
    product: Product,
    added: list[PriceSpec] = (),
    changed: dict | None = None,
    removed: list[Price] = (),
) -> None:
    """The admin's edits of a product's prices: `changed` maps a price to its new terms. A price
    in use is archived and replaced by a new one with those terms; one nobody used is edited
    in place. A removed price in use is archived, else deleted."""
    changed = {
        price: spec for price, spec in (changed or {}).items() if not _same_terms(price, spec)
    }
    touched = [price.pk for price in [*changed, *removed]]
    check_prices(
        organization=product.organization,
        specs=_live_specs(product, exclude=touched) + list(added) + list(changed.values()),
    )
    # the meters' names for the audit log's entries (written only in a staff user's request)
    names = _meter_names([*added, *changed.values(), *map(spec_of, [*changed, *removed])])
    for price in removed:
        terms = _audited_terms(spec_of(price), names)
        gone = {key: (value, None) for key, value in terms.items() if value is not None}
        if price_in_use(price):
            audit.record(
                price, action="price removal", changes={"status": ("live", "archived"), **gone}
            )
            Price.objects.filter(pk=price.pk).update(is_archived=True)
        else:
            # recorded first: the entry needs the price's id, which the deletion clears
            audit.record(
                price, action="price removal", changes={"status": ("live", "deleted"), **gone}
            )
            price.delete()
    for price, spec in changed.items():
        old, new = _audited_terms(spec_of(price), names), _audited_terms(spec, names)
        changes = {key: (old[key], new[key]) for key in old if old[key] != new[key]}
        if price_in_use(price):
            Price.objects.filter(pk=price.pk).update(is_archived=True)
            replacement = Price.objects.create(
                product=product, **_price_fields(spec, product.currency)
            )
            # what was sold keeps its terms: the new ones are the replacement's
            changes |= {"is_archived": (False, True), "replaced_by": (None, replacement.pk)}
        else:
            for key, value in _price_fields(spec, product.currency).items():
                setattr(price, key, value)
            price.save()
        audit.record(price, action="price change", changes=changes)
    for spec in added:
        price = Price.objects.create(product=product, **_price_fields(spec, product.currency))
        terms = _audited_terms(spec, names)
        audit.record(
            price,
            action="price added",
            created=True,
            changes={key: (None, value) for key, value in terms.items() if value is not None},
        )


def set_benefits(*, product: Product, benefit_ids: list) -> Product:
    benefits = list(
        Benefit.objects.filter(
            organization=product.organization_id, pk__in=benefit_ids, is_deleted=False
        )
    )
    if len(benefits) != len(set(benefit_ids)):
        raise InvalidPrice("Benefit not found", field=("benefits",))
    product.benefits.set(benefits)
    return product


def _benefit_meter(organization, meter_id):
    meter = organization_meter(organization, meter_id)
    if meter is None or meter.archived_at is not None:
        raise InvalidPrice("Meter not found (or archived)", field=("properties", "meter_id"))
    return meter


def check_expiry_days(days) -> None:
    """A pack's `expires_after_days`: a positive whole number of days (bounded), or None."""
    if days is None:
        return
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise InvalidPrice(
            f"expires_after_days is a whole number of days from 1 to {MAX_EXPIRY_DAYS}, or null",
            field=("properties", "expires_after_days"),
        )


def create_benefit(
    *,
    organization,
    description: str,
    meter_id,
    units: int,
    rollover: bool,
    metadata=None,
    expires_after_days: int | None = None,
) -> Benefit:
    check_expiry_days(expires_after_days)
    return Benefit.objects.create(
        organization=organization,
        description=description,
        meter=_benefit_meter(organization, meter_id),
        units=units,
        rollover=rollover,
        metadata=metadata or {},
        expires_after_days=expires_after_days,
    )


def update_benefit(benefit: Benefit, **changes) -> Benefit:
    """Description, units, rollover, metadata, deletion; the meter while no product carries it
    (a period's credits would otherwise change meter mid-subscription)."""
    if "expires_after_days" in changes:
        check_expiry_days(changes["expires_after_days"])
    if "meter_id" in changes and changes["meter_id"] != benefit.meter_id:
        if benefit.products.exists():
            raise InvalidPrice(
                "A benefit on a product keeps its meter; create a new benefit",
                field=("properties", "meter_id"),
            )
        benefit.meter = _benefit_meter(benefit.organization, changes.pop("meter_id"))
    changes.pop("meter_id", None)
    for key, value in changes.items():
        setattr(benefit, key, value)
    benefit.save()
    return benefit


def delete_benefit(benefit: Benefit) -> None:
    benefit.is_deleted = True
    benefit.save(update_fields=["is_deleted", "modified_at"])
    benefit.products.clear()


PRICE_KEYS = {
    PriceType.FIXED: {"price_amount"},
    PriceType.METERED_UNIT: {"meter_id", "unit_amount", "cap_amount"},
    PriceType.METERED_TIERS: {"meter_id", "tiers", "cap_amount"},
}
COMMON_KEYS = {"amount_type", "price_currency", "tax_behavior"}


def _uuid(value):
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
        spec.price_amount = minor_amount(data["price_amount"], (*loc, "price_amount"))
        return spec, currency
    meter_id = _uuid(data.get("meter_id"))
    if meter_id is None:
        raise InvalidPrice("Input should be a valid UUID", field=(*loc, "meter_id"))
    spec.meter_id = meter_id
    if data.get("cap_amount") is not None:
        spec.cap_amount = minor_amount(data["cap_amount"], (*loc, "cap_amount"))
    if amount_type == PriceType.METERED_UNIT:
        if "unit_amount" not in data:
            raise InvalidPrice("Field required", field=(*loc, "unit_amount"))
        spec.unit_amount = parse_rate(data["unit_amount"], (*loc, "unit_amount"))
    else:
        if "tiers" not in data:
            raise InvalidPrice("Field required", field=(*loc, "tiers"))
        spec.tiers = normalize_tiers(data["tiers"], (*loc, "tiers"))
    return spec, currency


def parse_prices_input(items: list, *, loc=("prices",), currency: str | None = None):
    """A product's price list → (specs, existing price ids kept, the product's currency)."""
    specs, keep, currencies = [], [], set()
    for index, item in enumerate(items):
        item_loc = (*loc, index)
        if isinstance(item, dict) and set(item) == {"id"}:
            price_id = _uuid(item["id"])
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
