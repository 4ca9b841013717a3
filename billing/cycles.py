"""Cycle close: every period whose `end + BILLING_GRACE` has passed gets one finalized invoice.

Each subscription-period closes in its own transaction under a row lock on the subscription:
metered lines of the period (late usage included), the next period's fixed price (unless the
subscription ends), discount and tax, the invoice with the organization's next gapless number,
the units billed per price, the period advanced, and the new period's credits. A crash anywhere
rolls all of it back; a second worker waits for the lock, sees the period already advanced and
skips it. Usage for a whole batch of due subscriptions is read set-based before the
transactions (metered.measure); the units already billed are re-read under the lock."""

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from billing import discounts, invoices, metered, periods, signals, taxes, usage
from billing.invoices import LineDraft
from billing.models import (
    LIVE_STATUSES,
    BillingReason,
    Invoice,
    PendingInvoiceItem,
    Subscription,
    SubscriptionPrice,
    SubscriptionStatus,
)
from billing.money import to_minor, to_money

logger = logging.getLogger(__name__)
BATCH_SIZE = 200


def grace():
    return settings.BILLING_GRACE


def live_subscriptions():
    return Subscription.objects.select_related(
        "organization", "customer", "product", "discount", "pending_product"
    ).prefetch_related(
        Prefetch(
            "subscription_prices",
            queryset=SubscriptionPrice.objects.select_related("price__meter", "price__product"),
        ),
        Prefetch(
            "pending_items",
            queryset=PendingInvoiceItem.objects.filter(invoice__isnull=True)
            .select_related("price")
            .order_by("created_at", "id"),
            to_attr="open_pending_items",
        ),
        "product__benefits__meter",
    )


def due_subscription_ids(*, as_of: datetime, limit: int | None = None) -> list:
    queryset = (
        Subscription.objects.filter(
            status__in=LIVE_STATUSES, current_period_end__lte=as_of - grace()
        )
        .order_by("current_period_end", "id")
        .values_list("pk", flat=True)
    )
    return list(queryset[:limit] if limit else queryset)


@dataclass
class CloseReport:
    """Ids only: a long catch-up must not keep every invoice (and the subscription graph it
    references) alive until it ends."""

    invoice_ids: list = field(default_factory=list)
    skipped: int = 0

    @property
    def closed(self) -> int:
        return len(self.invoice_ids)

    @property
    def invoices(self) -> list[Invoice]:
        return list(Invoice.objects.filter(pk__in=self.invoice_ids).order_by("sequence"))


def close_due(*, as_of: datetime | None = None, batch_size: int = BATCH_SIZE) -> CloseReport:
    """Close everything due at `as_of` (default now), catching up several periods if needed."""
    as_of = as_of or timezone.now()
    report = CloseReport()
    while True:
        ids = due_subscription_ids(as_of=as_of, limit=batch_size)
        if not ids:
            return report
        closed_before = report.closed
        close_batch(ids, as_of=as_of, report=report)
        if report.closed == closed_before:
            return report  # nothing advanced (e.g. all taken by another worker): stop


def close_batch(ids: list, *, as_of: datetime, report: CloseReport | None = None) -> CloseReport:
    """Close the due periods of these subscriptions, round by round (one period each per round),
    with the round's usage read set-based for all of them."""
    report = report or CloseReport()
    while True:
        due = list(
            live_subscriptions().filter(
                pk__in=ids, status__in=LIVE_STATUSES, current_period_end__lte=as_of - grace()
            )
        )
        if not due:
            return report
        read_at = timezone.now()  # later arrivals are the next period's (avg/min/max/unique)
        measures = metered.measure([(s, s.current_period_start, s.current_period_end) for s in due])
        rates = taxes.rates_by_organization({s.organization_id for s in due})
        progressed = False
        for subscription in due:
            invoice = close_period(
                subscription.pk,
                expected_start=subscription.current_period_start,
                measures=measures,
                loaded=subscription,
                tax_rates=rates[subscription.organization_id],
                read_at=read_at,
            )
            if invoice is None:
                report.skipped += 1
            else:
                report.invoice_ids.append(invoice.pk)
                progressed = True
        if not progressed:
            return report


def close_period(
    subscription_id,
    *,
    expected_start: datetime,
    measures: dict,
    end: datetime | None = None,
    final: bool = False,
    loaded: Subscription | None = None,
    tax_rates: list | None = None,
    read_at: datetime | None = None,
) -> Invoice | None:
    """Close one period in one transaction. `end` earlier than the period's end (with `final`)
    closes it early: a revocation. Returns None when someone else closed it first.

    `loaded` is the subscription as the batch read it (with its prices): it is used as is when
    the locked row still matches it — `billed_units` only change together with the period, so an
    unchanged period means unchanged units — and re-read otherwise."""
    with transaction.atomic():
        locked = (
            Subscription.objects.select_for_update()
            .filter(pk=subscription_id)
            .values(*LOCK_CHECKED)
            .first()
        )
        if (
            locked is None
            or locked["status"] not in LIVE_STATUSES
            or locked["current_period_start"] != expected_start
        ):
            return None
        subscription = loaded
        if subscription is None or any(
            getattr(subscription, key) != value for key, value in locked.items()
        ):
            subscription = live_subscriptions().get(pk=subscription_id)
        start = subscription.current_period_start
        end = end or subscription.current_period_end
        ending = final or subscription.cancel_at_period_end
        items = open_items(subscription)
        lines = [item_line(item) for item in items]
        metered_lines = metered.lines(subscription, measures)
        lines += [priced.draft(period_start=start, period_end=end) for priced in metered_lines]
        next_start, next_end = next_period(subscription)
        if not ending:
            if subscription.pending_product_id is not None:
                switch_product(subscription, subscription.pending_product, at=next_start)
            renewal = fixed_line(subscription, next_start, next_end)
            if renewal is not None:
                lines.append(renewal)
        invoice = issue(
            subscription,
            lines=lines,
            reason=BillingReason.SUBSCRIPTION_CYCLE,
            period_start=start,
            period_end=end,
            tax_rates=tax_rates,
            items=items,
        )
        changed = []
        for priced in metered_lines:
            sp = priced.subscription_price
            if sp.billed_units != priced.new_billed_units:
                sp.billed_units = priced.new_billed_units
                changed.append(sp)
        _save_billed_units(changed)
        if ending:
            _end(subscription, at=end)
        else:
            _advance(subscription, next_start, next_end, read_at=read_at)
            grant_period_credits(subscription, rollover_from=metered_lines)
        signals.subscription_changed.send(
            sender=Subscription, subscription=subscription, change="revoked" if ending else "cycled"
        )
        return invoice


# what the lock re-reads to tell whether the batch's copy of the subscription is still current
LOCK_CHECKED = (
    "status",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "discount_id",
    "discounted_invoices",
    "product_id",
    "pending_product_id",
    # every change that adds pending items (plan changes) saves the row
    "modified_at",
)


def next_period(subscription) -> tuple[datetime, datetime]:
    product = subscription.product
    return periods.period_bounds(
        subscription.anchor_at,
        product.recurring_interval,
        product.recurring_interval_count,
        subscription.period_index + 1,
    )


def fixed_line(subscription, start: datetime, end: datetime) -> LineDraft | None:
    """The fixed price billed in advance for [start, end); none when absent or zero."""
    for sp in subscription.subscription_prices.all():
        price = sp.price
        if price.is_metered or (sp.ends_at and sp.ends_at <= start) or sp.starts_at >= end:
            continue
        return _fixed_draft(subscription.product, price, start, end)
    return None


def fixed_price_at(subscription, at: datetime):
    """The fixed price in force at `at` (after plan changes, each has its own time span)."""
    for sp in subscription.subscription_prices.all():
        if sp.price.is_metered or sp.starts_at > at or (sp.ends_at and sp.ends_at <= at):
            continue
        return sp.price
    return None


def renewal_line(subscription) -> LineDraft | None:
    """The next period's fixed price as the next close will bill it: the pending product's when
    a plan change waits for the period end."""
    start, end = next_period(subscription)
    product = subscription.pending_product
    if product is None:
        return fixed_line(subscription, start, end)
    price = product_fixed_price(product)
    return _fixed_draft(product, price, start, end) if price is not None else None


def product_fixed_price(product):
    """The product's live fixed price, if it has one."""
    for price in product.prices.all():
        if not price.is_metered and not price.is_archived:
            return price
    return None


def _fixed_draft(product, price, start: datetime, end: datetime) -> LineDraft | None:
    amount = to_minor(price.price_amount)
    if amount <= 0:
        return None
    return LineDraft(
        label=f"{product.name} ({start:%b %d, %Y} – {end:%b %d, %Y})",
        period_start=start,
        period_end=end,
        amount=amount,
        price=price,
        unit_amount=None,
    )


def draft_for(
    subscription, lines: list[LineDraft], tax_rates: list | None = None
) -> invoices.InvoiceDraft:
    discount = subscription.discount
    if not discounts.applies_to_next_invoice(discount, subscription.discounted_invoices):
        discount = None
    return invoices.compute(
        currency=subscription.currency,
        lines=lines,
        discount=discount,
        tax_rate=taxes.rate_for(subscription.customer, tax_rates),
    )


def issue(
    subscription,
    *,
    lines,
    reason,
    period_start,
    period_end,
    tax_rates=None,
    items=(),
    counts_for_discount=True,
) -> Invoice:
    """Finalize an invoice of these lines, taking the pending `items` already among them. A
    credit larger than the invoice (a downgrade's unused time) is applied up to the invoice and
    the rest carried to the next one: an invoice never totals below zero. An invoice that is not
    a period's (`counts_for_discount` false: a plan change's) does not use up a repeating
    discount's periods."""
    lines, carried = carry_excess_credit(lines)
    draft = draft_for(subscription, lines, tax_rates)
    invoice = invoices.finalize(
        draft=draft,
        subscription=subscription,
        billing_reason=reason,
        period_start=period_start,
        period_end=period_end,
    )
    if items:
        PendingInvoiceItem.objects.filter(
            pk__in=[item.pk for item in items], invoice__isnull=True
        ).update(invoice=invoice)
    if carried:
        PendingInvoiceItem.objects.create(
            subscription=subscription,
            label=f"Credit carried forward from {invoice.number}",
            period_start=period_start,
            period_end=period_end,
            amount=to_money(carried, subscription.currency),
            proration=False,
        )
    if draft.discount is not None and counts_for_discount:
        subscription.discounted_invoices += 1
        subscription.save(update_fields=["discounted_invoices", "modified_at"])
    return invoice


def carry_excess_credit(lines: list[LineDraft]) -> tuple[list[LineDraft], int]:
    """(lines with their credits reduced so that they add up to at least zero, the credit left
    over (≤ 0, minor units)). The latest credits are the ones reduced."""
    excess = -sum(line.amount for line in lines)
    if excess <= 0:
        return lines, 0
    carried, reduced = -excess, list(lines)
    for index in range(len(reduced) - 1, -1, -1):
        line = reduced[index]
        if excess == 0:
            break
        if line.amount < 0:
            taken = min(excess, -line.amount)
            reduced[index] = replace(
                line, amount=line.amount + taken, label=f"{line.label} (partly carried forward)"
            )
            excess -= taken
    return reduced, carried


def open_items(subscription) -> list[PendingInvoiceItem]:
    """The subscription's pending items (prefetched by `live_subscriptions`)."""
    prefetched = getattr(subscription, "open_pending_items", None)
    if prefetched is not None:
        return list(prefetched)
    return list(
        subscription.pending_items.filter(invoice__isnull=True)
        .select_related("price")
        .order_by("created_at", "id")
    )


def item_line(item: PendingInvoiceItem) -> LineDraft:
    return LineDraft(
        label=item.label,
        period_start=item.period_start,
        period_end=item.period_end,
        amount=to_minor(item.amount),
        price=item.price,
        unit_amount=None,
        proration=item.proration,
    )


def switch_product(subscription, product, *, at: datetime) -> None:
    """From `at` the subscription bills `product`: the prices in force end at `at` and the
    product's prices start there (usage on either side is priced by the prices of its time).
    Clears a pending change. Runs under the subscription's row lock."""
    at = max(at, subscription.anchor_at)  # during a trial, prices start when it ends
    subscription.subscription_prices.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=at)).update(
        ends_at=at
    )
    SubscriptionPrice.objects.bulk_create(
        SubscriptionPrice(subscription=subscription, price=price, starts_at=at)
        for price in product.prices.filter(is_archived=False)
    )
    subscription.product = product
    subscription.pending_product = None
    subscription.pending_requested_at = None
    subscription.save(
        update_fields=["product", "pending_product", "pending_requested_at", "modified_at"]
    )
    # later reads through this object (the renewal line, the credits) see the new prices
    subscription.__dict__.pop("_prefetched_objects_cache", None)


# One statement for a close's prices (the ORM's bulk_update builds a CASE per row in Python,
# a quarter of a close's time in the P5 profile).
BILLED_UNITS_SQL = """
UPDATE billing_subscriptionprice sp SET billed_units = v.units
FROM unnest(%s::bigint[], %s::numeric[]) AS v(id, units)
WHERE sp.id = v.id
"""


def _save_billed_units(prices: list[SubscriptionPrice]) -> None:
    if prices:
        with connection.cursor() as cursor:
            cursor.execute(
                BILLED_UNITS_SQL, [[sp.pk for sp in prices], [sp.billed_units for sp in prices]]
            )


def _advance(subscription, start: datetime, end: datetime, *, read_at: datetime | None) -> None:
    subscription.period_index += 1
    subscription.current_period_start, subscription.current_period_end = start, end
    subscription.closed_usage_read_at = read_at or timezone.now()
    if subscription.status == SubscriptionStatus.TRIALING:
        subscription.status = SubscriptionStatus.ACTIVE
    subscription.save(
        update_fields=[
            "period_index",
            "current_period_start",
            "current_period_end",
            "closed_usage_read_at",
            "status",
            "modified_at",
        ]
    )


def _end(subscription, *, at: datetime) -> None:
    subscription.status = SubscriptionStatus.CANCELED
    subscription.ended_at = at
    subscription.ends_at = at
    subscription.canceled_at = subscription.canceled_at or timezone.now()
    subscription.current_period_end = at
    subscription.save(
        update_fields=[
            "status",
            "ended_at",
            "ends_at",
            "canceled_at",
            "current_period_end",
            "modified_at",
        ]
    )
    subscription.subscription_prices.filter(ends_at__isnull=True).update(ends_at=at)


def grant_period_credits(subscription, *, rollover_from: list | None = None) -> None:
    """Credits of the (new) current period as `meter.credited` system events at its start; with
    rollover, the closing period's unused credits carry over as one more event."""
    start = subscription.current_period_start
    carried = {}
    # lines come in time order: a meter's last line holds the credits its period left unused
    for priced in rollover_from or ():
        meter_id = priced.subscription_price.price.meter_id
        unused = (Decimal(priced.credited) - max(priced.consumed, Decimal(0))).to_integral_value(
            rounding=ROUND_FLOOR
        )
        carried[meter_id] = max(0, int(unused))
    for benefit in subscription.product.benefits.all():
        if benefit.is_deleted:
            continue
        usage.grant_credits(
            customer=subscription.customer,
            meter=benefit.meter,
            units=benefit.units,
            rollover=benefit.rollover,
            reason=f"subscription {subscription.pk}: {benefit.description}",
            timestamp=start,
        )
        unused = carried.get(benefit.meter_id, 0)
        if benefit.rollover and unused:
            usage.grant_credits(
                customer=subscription.customer,
                meter=benefit.meter,
                units=unused,
                rollover=True,
                reason=f"subscription {subscription.pk}: unused credits rolled over",
                timestamp=start,
            )
