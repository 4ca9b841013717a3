"""Subscription lifecycle: create (backdating allowed), trial, changes (discount, plan, cancel at
period end and undo, metadata), revoke now, and the current period's numbers (meters, upcoming
invoice) — the same invoice plan the close will finalize."""

from collections import defaultdict
from datetime import datetime

from django.db import transaction
from django.utils import timezone
from moneyed import Money

from billing import (
    credits,
    cycles,
    discounts,
    metered,
    periods,
    plan,
    plan_changes,
    signals,
    thresholds,
)
from billing.errors import BillingError, SubscriptionEnded, SubscriptionStateError
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
from customers.models import Customer
from metering import queries

UNSET = object()


# --- looking up what a request names, within the organization --------------------------------


def customer_of(organization, *, customer_id=None, external_customer_id=None) -> Customer:
    customers = Customer.objects.active().filter(organization=organization)
    if customer_id is not None:
        customer, field = customers.filter(pk=customer_id).first(), "customer_id"
    else:
        customer = customers.filter(external_id=external_customer_id).first()
        field = "external_customer_id"
    if customer is None:
        raise BillingError("Customer does not exist.", field=(field,), type_="customer_not_found")
    return customer


def product_of(organization, product_id, *, field="product_id") -> Product:
    product = Product.objects.filter(organization=organization, pk=product_id).first()
    if product is None:
        raise BillingError("Product does not exist.", field=(field,))
    return product


def discount_of(organization, discount_id) -> Discount | None:
    if discount_id is None:
        return None
    discount = Discount.objects.filter(
        organization=organization, pk=discount_id, deleted_at__isnull=True
    ).first()
    if discount is None:
        raise BillingError("Discount does not exist.", field=("discount_id",))
    return discount


# --- lifecycle --------------------------------------------------------------------------------


@transaction.atomic
def create_subscription(
    *,
    customer,
    product: Product,
    started_at: datetime | None = None,
    discount: Discount | None = None,
    metadata: dict | None = None,
    spend_threshold: Money | None = None,
) -> Subscription:
    """Start a subscription at `started_at` (default now; may be in the past: every period from
    then on is billed by the cycle close). Issues the first invoice (the first period's fixed
    price, if any) and grants the first period's credits."""
    if product.organization_id != customer.organization_id:
        raise SubscriptionStateError("Product does not exist.", field=("product_id",))
    if product.is_archived:
        raise SubscriptionStateError("The product is archived", field=("product_id",))
    if product.recurring_interval is None:
        raise SubscriptionStateError(
            "The product is a one-time product (a credit pack): it is bought, not subscribed to",
            field=("product_id",),
        )
    thresholds.validate(spend_threshold, product.currency)
    now = timezone.now()
    started_at = started_at or now
    if started_at > now:
        raise SubscriptionStateError("started_at cannot be in the future", field=("started_at",))
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
        spend_threshold=spend_threshold,
    )
    # Prices apply from the anchor: usage during a trial is not billed.
    SubscriptionPrice.objects.bulk_create(
        SubscriptionPrice(subscription=subscription, price=price, starts_at=anchor)
        for price in product.prices.filter(is_archived=False)
    )
    subscription = cycles.live_subscriptions().get(pk=subscription.pk)
    signals.subscription_created.send(sender=Subscription, subscription=subscription)
    first = None if trial_end else plan.first_period_line(subscription)
    if first is not None:
        cycles.issue(
            subscription,
            plan.draft_for(subscription, [first]),
            reason=BillingReason.SUBSCRIPTION_CREATE,
            period_start=start,
            period_end=end,
        )
    cycles.grant_period_credits(subscription)
    return subscription


def _locked(subscription: Subscription, field: str) -> Subscription:
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.status not in LIVE_STATUSES:
        raise SubscriptionStateError("The subscription has ended", field=(field,))
    return subscription


def update_subscription(
    subscription: Subscription,
    *,
    discount_id=UNSET,
    product_id=None,
    proration_behavior: str | None = None,
    clear_pending_change: bool = False,
    cancel_at_period_end: bool | None = None,
    metadata: dict | None = None,
    spend_threshold=UNSET,
) -> Subscription:
    """Polar's subscription update: one body, one outcome — a refused part leaves the others
    undone too. Ids are looked up in the subscription's organization."""
    organization = subscription.organization
    product = product_of(organization, product_id) if product_id is not None else None
    discount = discount_of(organization, discount_id) if discount_id is not UNSET else UNSET
    if product is not None:
        # a period that ended but waits for its grace is closed first, in its own transactions
        plan_changes.close_ended_period(subscription, at=timezone.now())
    with transaction.atomic():
        if discount is not UNSET:
            set_discount(subscription, discount)
        if product is not None:
            plan_changes.change_product(
                subscription,
                product,
                proration_behavior=proration_behavior or plan_changes.DEFAULT_BEHAVIOR,
            )
        if clear_pending_change:
            plan_changes.cancel_pending_change(subscription)
        if cancel_at_period_end is not None:
            set_cancel_at_period_end(subscription, cancel_at_period_end)
        if metadata is not None:
            set_metadata(subscription, metadata)
        if spend_threshold is not UNSET:
            thresholds.set_subscription_threshold(subscription, spend_threshold)
    return subscription


@transaction.atomic
def set_cancel_at_period_end(subscription: Subscription, cancel: bool) -> Subscription:
    """Cancel at the end of the current period, or undo that while the period runs."""
    subscription = _locked(subscription, "cancel_at_period_end")
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


@transaction.atomic
def set_discount(subscription: Subscription, discount: Discount | None) -> Subscription:
    """Attach a discount from the next invoice on (a new redemption), or remove it. Sending the
    discount the subscription already has changes nothing: a `once` discount that was used
    stays used."""
    subscription = _locked(subscription, "discount_id")
    if discount is not None and discount.pk == subscription.discount_id:
        return subscription
    if discount is not None:
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


def set_metadata(subscription: Subscription, metadata: dict) -> Subscription:
    Subscription.objects.filter(pk=subscription.pk).update(
        metadata=metadata, modified_at=timezone.now()
    )
    subscription.metadata = metadata
    return subscription


@transaction.atomic
def set_past_due(subscription: Subscription, *, at: datetime | None = None) -> Subscription:
    """A payment of the subscription failed (at `at`): `past_due` until one succeeds
    (payments' dunning). Only an active subscription changes; a repeated failure changes
    nothing."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.status != SubscriptionStatus.ACTIVE:
        return subscription
    subscription.status = SubscriptionStatus.PAST_DUE
    subscription.past_due_at = at or timezone.now()
    subscription.save(update_fields=["status", "past_due_at", "modified_at"])
    signals.subscription_changed.send(
        sender=Subscription, subscription=subscription, change="past_due"
    )
    return subscription


@transaction.atomic
def set_recovered(subscription: Subscription) -> Subscription:
    """The failed payments were collected: `past_due` becomes `active` again, and the current
    period's credits, if they were withheld, are granted now."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.status != SubscriptionStatus.PAST_DUE:
        return subscription
    subscription.status = SubscriptionStatus.ACTIVE
    subscription.past_due_at = None
    subscription.save(update_fields=["status", "past_due_at", "modified_at"])
    cycles.grant_withheld_credits(subscription)
    signals.subscription_changed.send(
        sender=Subscription, subscription=subscription, change="active"
    )
    return subscription


def revoke(subscription: Subscription, *, at: datetime | None = None) -> Subscription:
    """End now: a final invoice for the usage up to now, no renewal. If a cycle close advances
    the period meanwhile, the revocation closes the new current period instead. A subscription
    whose final invoice can't be computed is flagged and stays live (BillingError)."""
    at = at or timezone.now()
    while True:
        subscription = cycles.live_subscriptions().get(pk=subscription.pk)
        if subscription.status not in LIVE_STATUSES:
            raise SubscriptionEnded("The subscription has already ended", field=("id",))
        start = subscription.current_period_start
        end = max(min(at, subscription.current_period_end), start)
        try:
            read, usages, failures = cycles.measure([(subscription, start, end)])
            if failures:
                raise failures[subscription.pk]
            closed = cycles.close_period(
                subscription.pk,
                expected_start=start,
                usage=usages[subscription.pk],
                read=read,
                final=True,
            )
        except cycles.INFRASTRUCTURE:
            raise
        except cycles.UsageChanged:
            continue  # a threshold invoice came in between: measure again
        except Exception as exc:  # noqa: BLE001 - the caller gets a clear refusal
            cycles.flag(subscription, exc)
            if isinstance(exc, BillingError):
                raise
            raise BillingError(f"The final invoice can't be computed: {exc}", field=("id",))
        if closed is not None:
            return Subscription.objects.get(pk=subscription.pk)


# --- the current period -------------------------------------------------------------------------


def _current_usage(subscriptions: list[Subscription]) -> dict:
    with queries.consistent_read():
        return metered.measure(
            [(s, s.current_period_start, s.current_period_end) for s in subscriptions]
        )


def upcoming_invoice(subscription: Subscription) -> InvoiceDraft:
    """What closing the current period now would invoice (the close's own plan; nothing
    stored)."""
    subscription = cycles.live_subscriptions().get(pk=subscription.pk)
    usage = _current_usage([subscription])[subscription.pk]
    return plan.plan_period(subscription, usage).draft


def current_meters(subscriptions: list[Subscription]) -> dict:
    """subscription id → its current period's metered lines so far (consumed: own + late usage,
    credited, amount), one per meter, for a page of subscriptions in one set-based read. Ended
    ones: none."""
    live = [s for s in subscriptions if s.status in LIVE_STATUSES]
    usages = _current_usage(live) if live else {}
    return {
        s.pk: plan.merged_by_meter(plan.metered_lines(usages[s.pk])[0]) if s.pk in usages else []
        for s in subscriptions
    }


def current_credit_draws(subscriptions: list[Subscription]) -> dict:
    """grant id → the units the current periods' closes would draw of it so far (the close's own
    plan, nothing drawn), for a page of subscriptions in one set-based read."""
    live = [s for s in subscriptions if s.status in LIVE_STATUSES]
    drawn: dict = defaultdict(int)
    for usage in (_current_usage(live) if live else {}).values():
        for draws in credits.plan_draws(usage).values():
            for grant_id, units in draws.grants.items():
                drawn[grant_id] += units
    return dict(drawn)


def customer_period_numbers(pairs: list[tuple]) -> dict:
    """The customer-meter hook: for (customer id, meter) pairs, (customer id, meter id) →
    (consumed, credited) of the current billing period of the customer's live subscription that
    prices the meter; pairs without one are left out. One read for any number of pairs."""
    wanted = {(customer_id, meter.pk) for customer_id, meter in pairs}
    if not wanted:
        return {}
    # a subquery, not a join + DISTINCT over live_subscriptions' five joined tables: that form
    # took PostgreSQL 8-13 ms to plan on every customer-state read (bench/profile_state.py)
    pricing = SubscriptionPrice.objects.filter(
        price__meter_id__in={meter_id for _, meter_id in wanted}
    ).values("subscription_id")
    subscriptions = list(
        cycles.live_subscriptions().filter(
            customer_id__in={customer_id for customer_id, _ in wanted},
            status__in=LIVE_STATUSES,
            pk__in=pricing,
        )
    )
    customer_of_subscription = {s.pk: s.customer_id for s in subscriptions}
    found = {}
    for subscription_id, lines in current_meters(subscriptions).items():
        customer_id = customer_of_subscription[subscription_id]
        for line in lines:
            key = (customer_id, line.meter_id)
            if key in wanted:
                # the credit ledger's units left count as credited: the balance shows them
                found[key] = (line.consumed, line.credited + line.credits_left)
    return found
