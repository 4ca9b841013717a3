"""Credit packs: one-time products (`recurring_interval` null) with a fixed price and meter-credit
benefits. Buying one issues a `purchase` order (an invoice without subscription) that payments
collects like any other; once it is paid, each benefit's units are granted to the customer's
credit ledger (billing.credits), expiring `expires_after_days` after payment when set.

Auto top-up: per customer and meter, a pack and a threshold. When the customer meter's balance
(credited − consumed, as shown everywhere) falls below the threshold, the pack is bought. Exactly
once when several ingests cross it together: the check runs again under the top-up's row lock,
and an order of a pack for that meter not paid yet counts as units on their way."""

import logging

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import invoices, subscriptions, taxes
from billing.errors import BillingError
from billing.invoices import LineDraft
from billing.models import (
    AutoTopUp,
    BillingReason,
    Invoice,
    InvoiceStatus,
    Product,
)
from billing.money import check_storable, to_minor
from metering.models import Meter

logger = logging.getLogger(__name__)


def pack_price(product: Product):
    for price in product.prices.all():
        if not price.is_metered and not price.is_archived:
            return price
    return None


def check_pack(product: Product, customer) -> None:
    if product.organization_id != customer.organization_id:
        raise BillingError("Product does not exist.", field=("product_id",))
    if product.recurring_interval is not None:
        raise BillingError(
            "Only one-time products (recurring_interval null) are bought as packs",
            field=("product_id",),
        )
    if product.is_archived:
        raise BillingError("The product is archived", field=("product_id",))
    if pack_price(product) is None:
        raise BillingError("A pack needs a fixed price", field=("product_id",))


def buy(*, customer, product: Product, label_suffix: str = "") -> Invoice:
    """Issue the order of one pack (open; collected by payments on finalization)."""
    check_pack(product, customer)
    price = pack_price(product)
    amount = to_minor(price.price_amount)
    now = timezone.now()
    line = LineDraft(
        label=f"{product.name}{label_suffix}",
        period_start=now,
        period_end=now,
        amount=amount,
        price=price,
        price_terms={"amount_type": "fixed", "price_amount": amount},
        unit_amount=None,
    )
    check_storable(amount, product.currency, what=f"The line '{line.label}'")
    draft = invoices.compute(
        currency=product.currency,
        lines=[line],
        discount=None,
        tax_rate=taxes.rate_for(customer),
    )
    with transaction.atomic():
        return invoices.finalize(
            draft=draft,
            subscription=None,
            customer=customer,
            product=product,
            billing_reason=BillingReason.PURCHASE,
            period_start=now,
            period_end=now,
        )


# --- auto top-up ----------------------------------------------------------------------------------


def balance_of(customer_id, meter: Meter):
    """The customer meter's balance (credited − consumed) where a subscription prices the meter;
    None where none does (nothing draws the ledger then)."""
    numbers = subscriptions.customer_period_numbers([(customer_id, meter)])
    found = numbers.get((customer_id, meter.pk))
    if found is None:
        return None
    consumed, credited = found
    return credited - consumed


def _units_on_the_way(top_up: AutoTopUp) -> int:
    """Units of the top-up's meter in the customer's pack orders not paid yet."""
    return (
        Invoice.objects.filter(
            customer_id=top_up.customer_id,
            billing_reason=BillingReason.PURCHASE,
            status=InvoiceStatus.OPEN,
            product__benefits__meter_id=top_up.meter_id,
            product__benefits__is_deleted=False,
        ).aggregate(units=Sum("product__benefits__units"))["units"]
        or 0
    )


def check_top_ups(customer_ids) -> list[Invoice]:
    """Buy the pack of every active top-up of these customers whose balance fell below its
    threshold. Safe to run any number of times at once."""
    bought = []
    ids = list(
        AutoTopUp.objects.filter(customer_id__in=list(customer_ids), is_active=True).values_list(
            "pk", flat=True
        )
    )
    for top_up_id in ids:
        invoice = _check_one(top_up_id)
        if invoice is not None:
            bought.append(invoice)
    return bought


def _check_one(top_up_id):
    with transaction.atomic():
        top_up = (
            AutoTopUp.objects.select_for_update()
            .select_related("customer__organization", "meter", "pack")
            .filter(pk=top_up_id, is_active=True)
            .first()
        )
        if top_up is None:
            return None
        # read after the lock is granted: a top-up bought by the holder before is seen here
        balance = balance_of(top_up.customer_id, top_up.meter)
        if balance is None:
            return None
        if balance + _units_on_the_way(top_up) >= top_up.threshold_units:
            return None
        try:
            return buy(customer=top_up.customer, product=top_up.pack, label_suffix=" (auto top-up)")
        except BillingError as exc:
            logger.warning("auto top-up %s not bought: %s", top_up.pk, exc)
            return None
