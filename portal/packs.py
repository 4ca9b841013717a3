"""Credit packs in the portal: the packs a customer can buy for the meters on their usage page,
and buying one — the order issued by billing's `packs.buy`, then the saved card charged at once
through payments (portal.payments), as "Pay now" does for an open invoice.

Products are looked up among the customer's organization's one-time products that carry
credits (the page offers those of the meters it shows); any other id is simply not found. A
click while an order of the same pack is still unpaid does not buy a second one: it leads to
that order; nor does the same form sent twice (its purchase key), paid or not."""

import uuid
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Prefetch
from djmoney.money import Money

from billing import packs
from billing.models import Benefit, BillingReason, Invoice, InvoiceStatus, Product
from core import idempotency
from customers.models import Customer
from portal import payments


@dataclass(frozen=True)
class Credits:
    meter_name: str
    units: int
    expires_after_days: int | None


@dataclass(frozen=True)
class PackOffer:
    product_id: uuid.UUID
    name: str
    price: Money
    credits: tuple  # Credits of the shown meters, in meter name order


@dataclass(frozen=True)
class Purchase:
    """The outcome of a click: the order, and the card payment made for it now (None when the
    order was paid or charged otherwise, or `refusal` says why it was not charged)."""

    order: Invoice
    payment: object = None
    refusal: str | None = None


def _packs(customer: Customer, meter_ids=None):
    """The organization's one-time products with credits (of these meters; None: of any)."""
    products = Product.objects.filter(
        organization_id=customer.organization_id,
        recurring_interval__isnull=True,
        is_archived=False,
        benefits__is_deleted=False,
    )
    if meter_ids is not None:
        products = products.filter(benefits__meter_id__in=list(meter_ids))
    return products.distinct().prefetch_related(
        "prices",
        Prefetch(
            "benefits",
            queryset=Benefit.objects.filter(is_deleted=False).select_related("meter"),
        ),
    )


def offers(customer: Customer, meter_ids) -> list[PackOffer]:
    """The packs with credits of these meters that can be bought (a fixed price), by price."""
    meter_ids = set(meter_ids)
    if not meter_ids:
        return []
    found = []
    for product in _packs(customer, meter_ids):
        price = packs.pack_price(product)
        if price is None:
            continue
        credits = tuple(
            sorted(
                (
                    Credits(b.meter.name, b.units, b.expires_after_days)
                    for b in product.benefits.all()
                    if b.meter_id in meter_ids
                ),
                key=lambda c: c.meter_name,
            )
        )
        found.append(PackOffer(product.pk, product.name, price.price_amount, credits))
    return sorted(found, key=lambda offer: (offer.price.amount, offer.name))


MAX_KEY = 255  # core.IdempotencyKey.key


def _unpaid_order(customer: Customer, product: Product) -> Invoice | None:
    return (
        Invoice.objects.filter(
            customer=customer,
            product=product,
            billing_reason=BillingReason.PURCHASE,
            status=InvoiceStatus.OPEN,
        )
        .order_by("-created_at")
        .first()
    )


def buy(customer: Customer, product_id, *, purchase_key: str | None = None) -> Purchase | None:
    """Buy one pack and charge the saved card for it; None when the product is not a pack of
    the customer's organization. `purchase_key` (the form's, one per page shown) buys once: the
    same key again — a double click, a resent form — leads to the first click's order."""
    product = _packs(customer).filter(pk=product_id).first()
    if product is None or packs.pack_price(product) is None:
        return None
    endpoint = f"portal_pack:{customer.pk}:{product.pk}"
    with transaction.atomic():
        # one click at a time per customer: a double click finds the first one's order
        Customer.objects.select_for_update().filter(pk=customer.pk).first()
        claimed = None
        if purchase_key is not None and len(purchase_key) <= MAX_KEY:
            claimed = idempotency.claim(
                organization_id=customer.organization_id,
                endpoint=endpoint,
                key=purchase_key,
                request_hash=str(product.pk),
            )
            if claimed is None:
                first = idempotency.answered(
                    organization_id=customer.organization_id, endpoint=endpoint, key=purchase_key
                )
                return Purchase(Invoice.objects.get(pk=first.response_body["order_id"]))
        waiting = _unpaid_order(customer, product)
        if waiting is not None:
            return Purchase(waiting, refusal="unpaid_order")
        order = packs.buy(customer=customer, product=product)
        if claimed is not None:
            idempotency.answer(claimed, status=201, body={"order_id": str(order.pk)})
    order.refresh_from_db()
    if order.status != InvoiceStatus.OPEN:
        return Purchase(order)  # paid on finalization (automatic collection, or nothing owed)
    try:
        return Purchase(order, payments.pay_now(order))
    except payments.NotPayable as refusal:
        order.refresh_from_db()
        if order.status != InvoiceStatus.OPEN:
            return Purchase(order)
        return Purchase(order, refusal=refusal.reason)
