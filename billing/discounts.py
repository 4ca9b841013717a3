"""Discounts: percentage (basis points) or fixed amount; once / repeating / forever; codes,
redemption limits, validity window and product restriction. The discount of an invoice is spread
over its lines by largest remainder, so the lines add up to it exactly."""

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.errors import DiscountNotApplicable, InvalidDiscount
from billing.models import Discount, DiscountDuration, DiscountType, Product
from billing.money import is_known_currency, round_minor, to_minor, to_money

MAX_BASIS_POINTS = 10_000


def check_definition(
    *,
    type: str,
    duration: str,
    basis_points: int | None = None,
    amount: int | None = None,
    currency: str | None = None,
    duration_in_months: int | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
) -> None:
    if type == DiscountType.PERCENTAGE:
        if basis_points is None or not 1 <= basis_points <= MAX_BASIS_POINTS:
            raise InvalidDiscount(
                "basis_points should be between 1 and 10000", field=("basis_points",)
            )
    elif type == DiscountType.FIXED:
        if amount is None or amount < 1:
            raise InvalidDiscount("amount should be at least 1 (cents)", field=("amount",))
        if not currency:
            raise InvalidDiscount("currency is required", field=("currency",))
        if not is_known_currency(currency):
            raise InvalidDiscount("Input should be an ISO 4217 currency code", field=("currency",))
    else:
        raise InvalidDiscount("type should be 'percentage' or 'fixed'", field=("type",))
    if duration == DiscountDuration.REPEATING:
        if not duration_in_months or duration_in_months < 1:
            raise InvalidDiscount(
                "duration_in_months is required for a repeating discount",
                field=("duration_in_months",),
            )
    elif duration not in (DiscountDuration.ONCE, DiscountDuration.FOREVER):
        raise InvalidDiscount("Unknown duration", field=("duration",))
    if starts_at and ends_at and ends_at <= starts_at:
        raise InvalidDiscount("ends_at should be after starts_at", field=("ends_at",))


@transaction.atomic
def create_discount(
    *,
    organization,
    name: str,
    type: str,
    duration: str,
    basis_points: int | None = None,
    amount: int | None = None,
    currency: str | None = None,
    duration_in_months: int | None = None,
    code: str | None = None,
    starts_at=None,
    ends_at=None,
    max_redemptions: int | None = None,
    product_ids: list | None = None,
    metadata: dict | None = None,
) -> Discount:
    currency = currency.upper() if currency else None
    check_definition(
        type=type,
        duration=duration,
        basis_points=basis_points,
        amount=amount,
        currency=currency,
        duration_in_months=duration_in_months,
        starts_at=starts_at,
        ends_at=ends_at,
    )
    check_code(organization, code)
    discount = Discount.objects.create(
        organization=organization,
        name=name,
        type=type,
        duration=duration,
        basis_points=basis_points if type == DiscountType.PERCENTAGE else None,
        amount=to_money(amount, currency) if type == DiscountType.FIXED else None,
        duration_in_months=duration_in_months if duration == DiscountDuration.REPEATING else None,
        code=code,
        starts_at=starts_at,
        ends_at=ends_at,
        max_redemptions=max_redemptions,
        metadata=metadata or {},
    )
    if product_ids:
        set_products(discount=discount, product_ids=product_ids)
    return discount


def check_code(organization, code: str | None, *, exclude: Discount | None = None) -> None:
    """Codes are unique per organization among discounts not deleted (any case)."""
    if not code:
        return
    clash = Discount.objects.filter(
        organization=organization, code__iexact=code, deleted_at__isnull=True
    )
    if exclude is not None:
        clash = clash.exclude(pk=exclude.pk)
    if clash.exists():
        raise InvalidDiscount("A discount with this code already exists", field=("code",))


TERMS = ("type", "basis_points", "amount", "currency", "duration", "duration_in_months")
EDITABLE = ("name", "code", "starts_at", "ends_at", "max_redemptions", "metadata", "product_ids")


def is_redeemed(discount: Discount) -> bool:
    return discount.redemptions_count > 0 or discount.invoices.exists()


def _terms(discount: Discount) -> dict:
    amount = discount.amount
    return {
        "type": discount.type,
        "basis_points": discount.basis_points,
        "amount": to_minor(amount) if amount is not None else None,
        "currency": str(amount.currency) if amount is not None else None,
        "duration": discount.duration,
        "duration_in_months": discount.duration_in_months,
    }


def check_update(discount: Discount, changes: dict) -> tuple[dict, list]:
    """(the discount's terms after `changes`, the terms they change), or InvalidDiscount."""
    unknown = [key for key in changes if key not in TERMS + EDITABLE]
    if unknown:
        raise InvalidDiscount("Unknown discount field", field=(unknown[0],))
    terms = _terms(discount)
    if changes.get("currency"):
        changes["currency"] = changes["currency"].upper()
    new_terms = {**terms, **{key: changes[key] for key in TERMS if key in changes}}
    changed = [key for key in TERMS if new_terms[key] != terms[key]]
    if changed and is_redeemed(discount):
        raise InvalidDiscount(
            "A redeemed discount's terms cannot change (invoices promised them); create a new "
            "discount",
            field=(changed[0],),
        )
    check_definition(
        type=new_terms["type"],
        duration=new_terms["duration"],
        basis_points=new_terms["basis_points"],
        amount=new_terms["amount"],
        currency=new_terms["currency"],
        duration_in_months=new_terms["duration_in_months"],
        starts_at=changes.get("starts_at", discount.starts_at),
        ends_at=changes.get("ends_at", discount.ends_at),
    )
    check_code(discount.organization_id, changes.get("code", discount.code), exclude=discount)
    return new_terms, changed


@transaction.atomic
def update_discount(discount: Discount, **changes) -> Discount:
    """Name, code, validity window, limits, products and metadata can change; the terms (type,
    amount or basis points, duration) only until the discount is redeemed — invoices promised
    them."""
    discount = Discount.objects.select_for_update().get(pk=discount.pk)
    new_terms, changed = check_update(discount, changes)
    if changed:
        kind, duration = new_terms["type"], new_terms["duration"]
        discount.type, discount.duration = kind, duration
        discount.basis_points = (
            new_terms["basis_points"] if kind == DiscountType.PERCENTAGE else None
        )
        discount.amount = (
            to_money(new_terms["amount"], new_terms["currency"])
            if kind == DiscountType.FIXED
            else None
        )
        discount.duration_in_months = (
            new_terms["duration_in_months"] if duration == DiscountDuration.REPEATING else None
        )
    for key in ("name", "code", "starts_at", "ends_at", "max_redemptions", "metadata"):
        if key in changes:
            setattr(discount, key, changes[key])
    discount.save()
    if "product_ids" in changes:
        set_products(discount=discount, product_ids=changes["product_ids"] or [])
    return discount


def delete_discount(discount: Discount) -> None:
    """Soft delete: subscriptions that have it stop getting it; invoices keep showing it."""
    Discount.objects.filter(pk=discount.pk).update(
        deleted_at=timezone.now(), modified_at=timezone.now()
    )


def set_products(*, discount: Discount, product_ids: list) -> None:
    products = list(
        Product.objects.filter(organization=discount.organization_id, pk__in=product_ids)
    )
    if len(products) != len(set(product_ids)):
        raise InvalidDiscount("Product not found", field=("products",))
    discount.products.set(products)


def redeem(*, discount: Discount, product: Product, currency: str, at=None) -> None:
    """Count one redemption for a subscription, atomically against the limit."""
    at = at or timezone.now()
    if discount.deleted_at is not None:
        raise DiscountNotApplicable("Discount not found", field=("discount_id",))
    if (discount.starts_at and at < discount.starts_at) or (
        discount.ends_at and at >= discount.ends_at
    ):
        raise DiscountNotApplicable(
            "The discount is not valid at this time", field=("discount_id",)
        )
    if not applies_to_product(discount, product):
        raise DiscountNotApplicable(
            "The discount does not apply to this product", field=("discount_id",)
        )
    if discount.type == DiscountType.FIXED and str(discount.amount.currency) != currency:
        raise DiscountNotApplicable(
            f"The discount's currency is not {currency}", field=("discount_id",)
        )
    updated = Discount.objects.filter(
        Q(max_redemptions__isnull=True) | Q(redemptions_count__lt=F("max_redemptions")),
        pk=discount.pk,
    ).update(redemptions_count=F("redemptions_count") + 1)
    if not updated:
        raise DiscountNotApplicable(
            "The discount has reached its redemption limit", field=("discount_id",)
        )


def applies_to_product(discount: Discount, product: Product) -> bool:
    restricted = list(discount.products.values_list("pk", flat=True))
    return not restricted or product.pk in restricted


def applies_to_next_invoice(discount: Discount | None, invoices_so_far: int) -> bool:
    """once: the first invoice; repeating: the first `duration_in_months` invoices (one per
    billing period); forever: all of them."""
    if discount is None or discount.deleted_at is not None:
        return False
    if discount.duration == DiscountDuration.ONCE:
        return invoices_so_far < 1
    if discount.duration == DiscountDuration.REPEATING:
        return invoices_so_far < (discount.duration_in_months or 0)
    return True


def invoice_discount(discount: Discount, subtotal: int) -> int:
    """In minor units: a percentage of the subtotal rounded half away from zero, or the fixed
    amount; never more than the subtotal (totals are never negative)."""
    if subtotal <= 0:
        return 0
    if discount.type == DiscountType.PERCENTAGE:
        value = round_minor(Decimal(subtotal) * discount.basis_points / 10_000)
    else:
        value = to_minor(discount.amount)
    return min(value, subtotal)


def spread(total: int, amounts: list[int]) -> list[int]:
    """Split `total` over lines pro rata to `amounts` (largest remainder): shares add up to
    `total` exactly and none exceeds its line."""
    base = sum(amount for amount in amounts if amount > 0)
    if total <= 0 or base <= 0:
        return [0] * len(amounts)
    shares, remainders = [], []
    for index, amount in enumerate(amounts):
        weight = max(amount, 0) * total
        shares.append(weight // base)
        remainders.append((-(weight % base), index))
    left = total - sum(shares)
    for _, index in sorted(remainders)[:left]:
        shares[index] += 1
    return shares
