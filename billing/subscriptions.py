"""Subscription lifecycle: create (backdating allowed), trial, cancel at period end and undo,
revoke now, discount changes, and the current period's numbers (meters, upcoming invoice)."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from billing import cycles, discounts, metered, periods, signals
from billing.errors import SubscriptionStateError
from billing.invoices import InvoiceDraft
from billing.models import (
    LIVE_STATUSES,
    BillingReason,
    Discount,
    Product,
    Subscription,
    SubscriptionPrice,
    SubscriptionStatus,
)


@transaction.atomic
def create_subscription(
    *,
    customer,
    product: Product,
    started_at: datetime | None = None,
    discount: Discount | None = None,
    metadata: dict | None = None,
) -> Subscription:
    """Start a subscription at `started_at` (default now; may be in the past: every period from
    then on is billed by the cycle close). Issues the first invoice (the first period's fixed
    price, if any) and grants the first period's credits."""
    if product.organization_id != customer.organization_id:
        raise SubscriptionStateError("Product not found", field=("body", "product_id"))
    if product.is_archived:
        raise SubscriptionStateError("The product is archived", field=("body", "product_id"))
    now = timezone.now()
    started_at = started_at or now
    if started_at > now:
        raise SubscriptionStateError(
            "started_at cannot be in the future", field=("body", "started_at")
        )
    trial_end = None
    if product.trial_interval and product.trial_interval_count:
        trial_end = periods.shift(started_at, product.trial_interval, product.trial_interval_count)
    anchor = trial_end or started_at
    if trial_end:
        period_index, (start, end) = -1, (started_at, trial_end)
    else:
        period_index = 0
        start, end = periods.period_bounds(
            anchor, product.recurring_interval, product.recurring_interval_count, 0
        )
    if discount is not None:
        discounts.redeem(discount=discount, product=product, currency=product.currency, at=now)
    subscription = Subscription.objects.create(
        organization_id=customer.organization_id,
        customer=customer,
        product=product,
        currency=product.currency,
        status=SubscriptionStatus.TRIALING if trial_end else SubscriptionStatus.ACTIVE,
        started_at=started_at,
        anchor_at=anchor,
        period_index=period_index,
        current_period_start=start,
        current_period_end=end,
        trial_start=started_at if trial_end else None,
        trial_end=trial_end,
        discount=discount,
        metadata=metadata or {},
    )
    # Prices apply from the anchor: usage during a trial is not billed.
    SubscriptionPrice.objects.bulk_create(
        SubscriptionPrice(subscription=subscription, price=price, starts_at=anchor)
        for price in product.prices.filter(is_archived=False)
    )
    subscription = cycles.live_subscriptions().get(pk=subscription.pk)
    signals.subscription_created.send(sender=Subscription, subscription=subscription)
    if not trial_end:
        first = cycles.fixed_line(subscription, start, end)
        if first is not None:
            cycles.issue(
                subscription,
                lines=[first],
                reason=BillingReason.SUBSCRIPTION_CREATE,
                period_start=start,
                period_end=end,
            )
    cycles.grant_period_credits(subscription)
    return subscription


def _locked(subscription: Subscription) -> Subscription:
    return Subscription.objects.select_for_update().get(pk=subscription.pk)


@transaction.atomic
def set_cancel_at_period_end(subscription: Subscription, cancel: bool) -> Subscription:
    """Cancel at the end of the current period, or undo that while the period runs."""
    subscription = _locked(subscription)
    if subscription.status not in LIVE_STATUSES:
        raise SubscriptionStateError(
            "The subscription has ended", field=("body", "cancel_at_period_end")
        )
    subscription.cancel_at_period_end = cancel
    subscription.canceled_at = timezone.now() if cancel else None
    subscription.ends_at = subscription.current_period_end if cancel else None
    subscription.save(
        update_fields=["cancel_at_period_end", "canceled_at", "ends_at", "modified_at"]
    )
    signals.subscription_changed.send(
        sender=Subscription,
        subscription=subscription,
        change="canceled" if cancel else "uncanceled",
    )
    return subscription


def revoke(subscription: Subscription, *, at: datetime | None = None) -> Subscription:
    """End now: a final invoice for the usage up to now, no renewal. If a cycle close advances
    the period meanwhile, the revocation closes the new current period instead."""
    at = at or timezone.now()
    while True:
        subscription = cycles.live_subscriptions().get(pk=subscription.pk)
        if subscription.status not in LIVE_STATUSES:
            raise SubscriptionStateError("The subscription has already ended", field=("path", "id"))
        start = subscription.current_period_start
        end = max(min(at, subscription.current_period_end), start)
        measures = metered.measure([(subscription, start, end)])
        closed = cycles.close_period(
            subscription.pk, expected_start=start, measures=measures, end=end, final=True
        )
        if closed is not None:
            return Subscription.objects.get(pk=subscription.pk)


@transaction.atomic
def set_discount(subscription: Subscription, discount: Discount | None) -> Subscription:
    subscription = _locked(subscription)
    if subscription.status not in LIVE_STATUSES:
        raise SubscriptionStateError("The subscription has ended", field=("body", "discount_id"))
    if discount is not None and discount.pk != subscription.discount_id:
        discounts.redeem(
            discount=discount, product=subscription.product, currency=subscription.currency
        )
    subscription.discount = discount
    subscription.discounted_invoices = 0
    subscription.save(update_fields=["discount", "discounted_invoices", "modified_at"])
    signals.subscription_changed.send(
        sender=Subscription, subscription=subscription, change="updated"
    )
    return subscription


def upcoming_invoice(subscription: Subscription) -> InvoiceDraft:
    """What closing the current period now would invoice (computed live, nothing stored)."""
    subscription = cycles.live_subscriptions().get(pk=subscription.pk)
    lines = [cycles.item_line(item) for item in cycles.open_items(subscription)]
    lines += [
        priced.draft(
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
        )
        for priced in metered.current_lines(subscription)
    ]
    if subscription.status in LIVE_STATUSES and not subscription.cancel_at_period_end:
        renewal = cycles.renewal_line(subscription)
        if renewal is not None:
            lines.append(renewal)
    lines, _ = cycles.carry_excess_credit(lines)
    return cycles.draft_for(subscription, lines)


def current_meters(subscriptions: list[Subscription]) -> dict:
    """subscription id → its current period's metered lines so far (consumed: own + late usage,
    credited, amount), one per meter, for a page of subscriptions in one set-based read. Ended
    ones: none."""
    live = [s for s in subscriptions if s.status in LIVE_STATUSES]
    found = metered.measure([(s, s.current_period_start, s.current_period_end) for s in live])
    return {
        s.pk: metered.merged_by_meter(metered.lines(s, found)) if s.status in LIVE_STATUSES else []
        for s in subscriptions
    }


def customer_period_numbers(pairs: list[tuple]) -> dict:
    """The customer-meter hook: for (customer id, meter) pairs, (customer id, meter id) →
    (consumed, credited) of the current billing period of the customer's live subscription that
    prices the meter; pairs without one are left out. One read for any number of pairs."""
    wanted = {(customer_id, meter.pk) for customer_id, meter in pairs}
    if not wanted:
        return {}
    subscriptions = list(
        cycles.live_subscriptions()
        .filter(
            customer_id__in={customer_id for customer_id, _ in wanted},
            status__in=LIVE_STATUSES,
            subscription_prices__price__meter_id__in={meter_id for _, meter_id in wanted},
        )
        .distinct()
    )
    customer_of = {subscription.pk: subscription.customer_id for subscription in subscriptions}
    found = {}
    for subscription_id, lines in current_meters(subscriptions).items():
        customer_id = customer_of[subscription_id]
        for priced in lines:
            key = (customer_id, priced.subscription_price.price.meter_id)
            if key in wanted:
                found[key] = (priced.consumed, priced.credited)
    return found
