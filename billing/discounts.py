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
from billing.money import round_minor, to_minor, to_money

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
                "basis_points should be between 1 and 10000", field=("body", "basis_points")
            )
    elif type == DiscountType.FIXED:
        if amount is None or amount < 1:
            raise InvalidDiscount("amount should be at least 1 (cents)", field=("body", "amount"))
        if not currency:
            raise InvalidDiscount("currency is required", field=("body", "currency"))
    else:
        raise InvalidDiscount("type should be 'percentage' or 'fixed'", field=("body", "type"))
    if duration == DiscountDuration.REPEATING:
        if not duration_in_months or duration_in_months < 1:
            raise InvalidDiscount(
                "duration_in_months is required for a repeating discount",
                field=("body", "duration_in_months"),
            )
    elif duration not in (DiscountDuration.ONCE, DiscountDuration.FOREVER):
        raise InvalidDiscount("Unknown duration", field=("body", "duration"))
    if starts_at and ends_at and ends_at <= starts_at:
        raise InvalidDiscount("ends_at should be after starts_at", field=("body", "ends_at"))


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
    if (
        code
        and Discount.objects.filter(
            organization=organization, code__iexact=code, deleted_at__isnull=True
        ).exists()
    ):
        raise InvalidDiscount("A discount with this code already exists", field=("body", "code"))
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


def set_products(*, discount: Discount, product_ids: list) -> None:
    products = list(
        Product.objects.filter(organization=discount.organization_id, pk__in=product_ids)
    )
    if len(products) != len(set(product_ids)):
        raise InvalidDiscount("Product not found", field=("body", "products"))
    discount.products.set(products)


def redeem(*, discount: Discount, product: Product, currency: str, at=None) -> None:
    """Count one redemption for a subscription, atomically against the limit."""
    at = at or timezone.now()
    if discount.deleted_at is not None:
        raise DiscountNotApplicable("Discount not found", field=("body", "discount_id"))
    if (discount.starts_at and at < discount.starts_at) or (
        discount.ends_at and at >= discount.ends_at
    ):
        raise DiscountNotApplicable(
            "The discount is not valid at this time", field=("body", "discount_id")
        )
    if not applies_to_product(discount, product):
        raise DiscountNotApplicable(
            "The discount does not apply to this product", field=("body", "discount_id")
        )
    if discount.type == DiscountType.FIXED and str(discount.amount.currency) != currency:
        raise DiscountNotApplicable(
            f"The discount's currency is not {currency}", field=("body", "discount_id")
        )
    updated = Discount.objects.filter(
        Q(max_redemptions__isnull=True) | Q(redemptions_count__lt=F("max_redemptions")),
        pk=discount.pk,
    ).update(redemptions_count=F("redemptions_count") + 1)
    if not updated:
        raise DiscountNotApplicable(
            "The discount has reached its redemption limit", field=("body", "discount_id")
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
