"""Plan changes: moving a live subscription to another product mid-period.

- `prorate`: the unused part of the old fixed price is credited and the rest of the period at
  the new one charged, both to the second, as pending items of the next invoice.
- `invoice`: the same two items, invoiced at once (`subscription_update`). When the credit is
  larger than the charge (a downgrade) nothing is paid out: the items wait for the next invoice.
- `next_period`: nothing changes now; the close of the current period switches the product
  before it bills the renewal.

Metered prices switch at the same instant: usage before the change is priced by the old
product's prices and usage after it by the new one's, both on the period's invoice, each line
over its own part of the period (see `billing.metered`). The new product must bill in the same
currency and at the same interval: anything else would need a new billing period, which is a
cancel-and-subscribe, not a change."""

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing import cycles, discounts, plan, signals
from billing.errors import PlanChangeError, SubscriptionStateError
from billing.models import (
    LIVE_STATUSES,
    BillingReason,
    PendingInvoiceItem,
    Product,
    Subscription,
    SubscriptionStatus,
)
from billing.money import round_minor, to_minor, to_money
from core import audit

PRORATE, INVOICE, NEXT_PERIOD = "prorate", "invoice", "next_period"
BEHAVIORS = (PRORATE, INVOICE, NEXT_PERIOD)
DEFAULT_BEHAVIOR = PRORATE


def prorated(amount: int, start: datetime, end: datetime, at: datetime) -> int:
    """The part of a period's `amount` (minor units) for [at, end), by whole seconds, rounded
    half away from zero."""
    total = int((end - start).total_seconds())
    remaining = min(max(int((end - at).total_seconds()), 0), total)
    if total <= 0:
        return 0
    return round_minor(Decimal(amount) * remaining / total)


def change_product(
    subscription: Subscription,
    product: Product,
    *,
    proration_behavior: str = DEFAULT_BEHAVIOR,
    at: datetime | None = None,
) -> Subscription:
    at = at or timezone.now()
    if proration_behavior not in BEHAVIORS:
        raise PlanChangeError(
            f"proration_behavior must be one of {', '.join(BEHAVIORS)}",
            field=("proration_behavior",),
        )
    close_ended_period(subscription, at=at)
    with transaction.atomic():
        Subscription.objects.select_for_update().filter(pk=subscription.pk).values("pk").get()
        subscription = cycles.live_subscriptions().get(pk=subscription.pk)
        _check(subscription, product, at)
        before = _named(subscription.product)
        if proration_behavior == NEXT_PERIOD:
            subscription.pending_product = product
            subscription.pending_requested_at = at
            subscription.save(
                update_fields=["pending_product", "pending_requested_at", "modified_at"]
            )
        else:
            _change_now(subscription, product, at, invoice_now=proration_behavior == INVOICE)
        subscription = cycles.live_subscriptions().get(pk=subscription.pk)
        changed = "pending_product" if proration_behavior == NEXT_PERIOD else "product"
        audit.record(
            subscription,
            action="plan change",
            changes={
                changed: (before if changed == "product" else None, _named(product)),
                "proration_behavior": (None, proration_behavior),
            },
        )
        signals.subscription_changed.send(
            sender=Subscription, subscription=subscription, change="updated"
        )
    return subscription


def _named(product: Product) -> str:
    return f"{product.name} ({product.pk})"


def close_ended_period(subscription: Subscription, *, at: datetime) -> None:
    """A period that ended but waits for its grace is closed before a change at `at`: the change
    belongs to the period that contains `at`, and that period's late usage still bills exactly
    once. Callers that wrap a change in their own transaction call this before it."""
    current = Subscription.objects.filter(pk=subscription.pk).values("current_period_end").get()
    if current["current_period_end"] <= at:
        cycles.close_batch([subscription.pk], as_of=at + cycles.grace())


@transaction.atomic
def cancel_pending_change(subscription: Subscription) -> Subscription:
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.pending_product_id is not None:
        subscription.pending_product = None
        subscription.pending_requested_at = None
        subscription.save(update_fields=["pending_product", "pending_requested_at", "modified_at"])
        signals.subscription_changed.send(
            sender=Subscription, subscription=subscription, change="updated"
        )
    return subscription


def _check(subscription: Subscription, product: Product, at: datetime) -> None:
    field = ("product_id",)
    if subscription.status not in LIVE_STATUSES:
        raise SubscriptionStateError("The subscription has ended", field=field)
    if product.organization_id != subscription.organization_id:
        raise PlanChangeError("Product not found", field=field)
    if product.is_archived:
        raise PlanChangeError("The product is archived", field=field)
    if product.pk == subscription.product_id:
        raise PlanChangeError("The subscription is already on this product", field=field)
    if product.currency != subscription.currency:
        raise PlanChangeError(
            f"The product bills in {product.currency} and the subscription in "
            f"{subscription.currency}: a change of currency is a new subscription",
            field=field,
        )
    old = subscription.product
    if (product.recurring_interval, product.recurring_interval_count) != (
        old.recurring_interval,
        old.recurring_interval_count,
    ):
        raise PlanChangeError(
            f"The product renews every {_interval(product)} and the subscription every "
            f"{_interval(old)}: a change of billing interval is a new subscription",
            field=field,
        )
    if subscription.discount is not None and not discounts.applies_to_product(
        subscription.discount, product
    ):
        raise PlanChangeError(
            "The subscription's discount does not apply to this product; remove the discount "
            "first (discount_id: null)",
            field=field,
        )


def _interval(product: Product) -> str:
    count = product.recurring_interval_count
    return f"{count} {product.recurring_interval}s" if count != 1 else product.recurring_interval


def _change_now(subscription: Subscription, product: Product, at: datetime, *, invoice_now: bool):
    start, end = subscription.current_period_start, subscription.current_period_end
    items = []

    def prorate(price, sign: int, what: str) -> None:
        amount = prorated(to_minor(price.price_amount), start, end, at) if price else 0
        if amount:
            items.append(
                PendingInvoiceItem(
                    subscription=subscription,
                    label=f"{what} ({at:%b %d, %Y %H:%M} – {end:%b %d, %Y %H:%M} UTC)",
                    price=price,
                    period_start=at,
                    period_end=end,
                    amount=to_money(sign * amount, subscription.currency),
                )
            )

    # During a trial nothing was charged and the new prices start when it ends: no proration.
    if subscription.status != SubscriptionStatus.TRIALING:
        old_name = subscription.product.name
        prorate(plan.fixed_price_at(subscription, at), -1, f"Unused time on {old_name}")
        prorate(plan.product_fixed_price(product), 1, f"Remaining time on {product.name}")
    cycles.switch_product(subscription, product, at=at)
    PendingInvoiceItem.objects.bulk_create(items)
    if invoice_now and items and sum(to_minor(item.amount) for item in items) > 0:
        cycles.issue(
            subscription,
            plan.draft_for(subscription, [plan.item_line(item) for item in items]),
            reason=BillingReason.SUBSCRIPTION_UPDATE,
            period_start=at,
            period_end=end,
            items=items,
            counts_for_discount=False,
        )
