"""Cycle close: every period whose `end + BILLING_GRACE` has passed gets one finalized invoice.

A batch of due subscriptions is measured at once, inside one committed read boundary
(`metering.queries.consistent_read`), before any lock is taken. Then each subscription-period
closes in its own transaction under a row lock on the subscription: the invoice plan
(`billing.plan`: pending items, metered lines, the next period's fixed price, discount, tax) is
finalized with the organization's next gapless number, the units billed per price are saved, a
scheduled plan change is applied, the period advances (remembering the read boundary: what
arrives after it is the next period's late usage) and the new period's credits are granted. A
crash anywhere rolls all of it back; a second worker waits for the lock, sees the period
already advanced and skips it.

**Isolation**: a subscription whose invoice can't be computed or stored (an amount out of range,
a broken price) is flagged with the reason (`Subscription.billing_error`, shown in the admin and
logged) and skipped; every other subscription of the run is closed. Infrastructure failures
(the database going away) are not a subscription's fault: they end the run, which the next one
resumes."""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from billing import credits, invoices, metered, plan, signals, taxes
from billing.invoices import InvoiceDraft
from billing.models import (
    LIVE_STATUSES,
    BillingReason,
    Invoice,
    PendingInvoiceItem,
    Subscription,
    SubscriptionPrice,
    SubscriptionStatus,
)
from billing.money import to_money
from metering import customer_meters, queries

logger = logging.getLogger(__name__)
BATCH_SIZE = 200
# failures that are the infrastructure's, not a subscription's: the run stops and is retried
INFRASTRUCTURE = (OperationalError, InterfaceError)


class UsageChanged(Exception):  # noqa: N818 - a signal to measure again, not a failure
    """The period's threshold invoices changed after its usage was measured: measure again."""


def grace():
    return settings.BILLING_GRACE


def live_subscriptions():
    return Subscription.objects.select_related(
        "organization", "customer", "product", "discount", "pending_product"
    ).prefetch_related(
        Prefetch(
            "subscription_prices",
            queryset=SubscriptionPrice.objects.select_related(
                "price__meter", "price__product"
            ).order_by("starts_at", "id"),
        ),
        Prefetch(
            "pending_items",
            queryset=PendingInvoiceItem.objects.filter(invoice__isnull=True)
            .select_related("price")
            .order_by("created_at", "id"),
            to_attr="open_pending_items",
        ),
        "product__benefits__meter",
        "pending_product__prices",
        "product__prices",
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
    flagged: list = field(default_factory=list)  # subscriptions that could not be closed

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
        ids = [
            pk
            for pk in due_subscription_ids(as_of=as_of, limit=batch_size + len(report.flagged))
            if pk not in report.flagged
        ][:batch_size]
        if not ids:
            return report
        closed_before = report.closed
        close_batch(ids, as_of=as_of, report=report)
        if report.closed == closed_before:
            return report  # nothing advanced (e.g. all taken by another worker): stop


def measure(periods: list[tuple]) -> tuple[queries.ReadBoundary, dict, dict]:
    """(the read boundary, subscription id → PeriodUsage, subscription id → why it could not be
    measured) for (subscription, start, end) triples: set-based, or one by one when the batch's
    read fails, so that one broken subscription doesn't stop the others."""
    try:
        with queries.consistent_read() as read:
            return read, metered.measure(periods), {}
    except INFRASTRUCTURE:
        raise
    except Exception:  # noqa: BLE001 - find the culprit below, one subscription at a time
        logger.warning("billing: the batch usage read failed; reading one by one", exc_info=True)
    usages, failures = {}, {}
    with queries.consistent_read() as read:
        for one in periods:
            try:
                with transaction.atomic():
                    usages.update(metered.measure([one]))
            except INFRASTRUCTURE:
                raise
            except Exception as exc:  # noqa: BLE001 - isolation: flag it, go on
                failures[one[0].pk] = exc
    return read, usages, failures


def close_batch(ids: list, *, as_of: datetime, report: CloseReport | None = None) -> CloseReport:
    """Close the due periods of these subscriptions, round by round (one period each per round),
    with the round's usage read set-based for all of them."""
    report = report or CloseReport()
    while True:
        due = [
            subscription
            for subscription in live_subscriptions().filter(
                pk__in=ids, status__in=LIVE_STATUSES, current_period_end__lte=as_of - grace()
            )
            if subscription.pk not in report.flagged
        ]
        if not due:
            return report
        read, usages, failures = measure(
            [(s, s.current_period_start, s.current_period_end) for s in due]
        )
        rates = taxes.rates_by_organization({s.organization_id for s in due})
        progressed = False
        for subscription in due:
            try:
                if subscription.pk in failures:
                    raise failures[subscription.pk]
                invoice = close_period(
                    subscription.pk,
                    expected_start=subscription.current_period_start,
                    usage=usages[subscription.pk],
                    read=read,
                    loaded=subscription,
                    tax_rates=rates[subscription.organization_id],
                )
            except INFRASTRUCTURE:
                raise
            except UsageChanged:
                progressed = True  # the next round measures it again
                continue
            except Exception as exc:  # noqa: BLE001 - isolation: flag it, go on
                flag(subscription, exc)
                report.flagged.append(subscription.pk)
                continue
            if invoice is None:
                report.skipped += 1
            else:
                report.invoice_ids.append(invoice.pk)
                progressed = True
        if not progressed:
            return report


def flag(subscription, exc: Exception) -> None:
    """Record why the subscription's close failed (its transaction rolled back)."""
    reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    logger.error(
        "billing: subscription %s not closed (%s); flagged and skipped",
        subscription.pk,
        reason,
        exc_info=not hasattr(exc, "message"),
    )
    Subscription.objects.filter(pk=subscription.pk).update(
        billing_error=reason[:2000], billing_error_at=timezone.now()
    )


def close_period(
    subscription_id,
    *,
    expected_start: datetime,
    usage: metered.PeriodUsage,
    read: queries.ReadBoundary,
    final: bool = False,
    loaded: Subscription | None = None,
    tax_rates: list | None = None,
) -> Invoice | None:
    """Close one period in one transaction: the measured `usage` ends at the period's end, or
    earlier with `final` (a revocation). Returns None when someone else closed it first.

    `loaded` is the subscription as the batch read it (with its prices): it is used as is when
    the locked row still matches it, and re-read otherwise. The usage stays valid either way:
    prices change only with a plan change, which first closes a due period itself, so an
    unchanged period means the prices and units billed that `usage` was measured with. Its
    threshold invoices are the exception (issued under this lock, by `billing.thresholds`, at any
    time): when they changed since `usage` was measured, UsageChanged — measure again."""
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
        if locked["threshold_version"] != usage.threshold_version:
            raise UsageChanged(subscription_id)
        subscription = loaded
        if subscription is None or any(
            getattr(subscription, key) != value for key, value in locked.items()
        ):
            subscription = live_subscriptions().get(pk=subscription_id)
        period = plan.plan_period(subscription, usage, tax_rates=tax_rates, final=final)
        next_start, next_end = plan.next_period(subscription)
        invoice = issue(
            subscription,
            period.draft,
            reason=BillingReason.SUBSCRIPTION_CYCLE,
            period_start=period.start,
            period_end=period.end,
            items=period.items,
            carried=period.carried,
            usage_read=read,
            late_since=metered.boundary_of(subscription),
        )
        _save_billed_units(period.metered)
        try:
            credits.record_draws(invoice, period.credit_draws)
        except credits.CreditsChanged:
            raise UsageChanged(subscription_id) from None
        if not period.renews:
            _end(subscription, at=period.end, read=read)
        else:
            if subscription.pending_product_id is not None:
                switch_product(subscription, subscription.pending_product, at=next_start)
            _advance(subscription, next_start, next_end, read=read)
            grant_period_credits(subscription, unused=period.unused_credits)
        signals.subscription_changed.send(
            sender=Subscription,
            subscription=subscription,
            change="cycled" if period.renews else "revoked",
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
    # threshold invoices of the period issued or voided
    "threshold_version",
)


def issue(
    subscription,
    draft: InvoiceDraft,
    *,
    reason: str,
    period_start: datetime,
    period_end: datetime,
    items=(),
    carried: int = 0,
    counts_for_discount: bool = True,
    usage_read=None,
    late_since=None,
) -> Invoice:
    """Finalize an invoice of this draft, taking the pending `items` among its lines, and carry a
    credit beyond the invoice (`carried`, ≤ 0) to the next one: an invoice never totals below
    zero. An invoice that is not a period's (`counts_for_discount` false: a plan change's) does
    not use up a repeating discount's periods."""
    invoice = invoices.finalize(
        draft=draft,
        subscription=subscription,
        billing_reason=reason,
        period_start=period_start,
        period_end=period_end,
        usage_read=usage_read,
        late_since=late_since,
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


def switch_product(subscription, product, *, at: datetime) -> None:
    """From `at` the subscription bills `product`: the prices in force end at `at` and the
    product's prices start there (usage on either side is priced by the prices of its time).
    Clears a pending change. Runs under the subscription's row lock."""
    at = max(at, subscription.anchor_at)  # during a trial, prices start when it ends
    spans = subscription.subscription_prices
    spans.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=at)).update(ends_at=at)
    prices = list(product.prices.filter(is_archived=False))
    # a price that already starts at `at` (changes back and forth at one instant, or during a
    # trial) has a span of no length there: it simply applies again
    again = set(spans.filter(starts_at=at, price__in=prices).values_list("price_id", flat=True))
    spans.filter(starts_at=at, price_id__in=again).update(ends_at=None)
    SubscriptionPrice.objects.bulk_create(
        SubscriptionPrice(subscription=subscription, price=price, starts_at=at)
        for price in prices
        if price.pk not in again
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
# a quarter of a close's time in the P5 profile). It adds what the close billed rather than
# writing the total it measured: a void that released units meanwhile (billing.voids) keeps them
# released.
BILLED_UNITS_SQL = """
UPDATE billing_subscriptionprice sp SET billed_units = sp.billed_units + v.units
FROM unnest(%s::bigint[], %s::numeric[]) AS v(id, units)
WHERE sp.id = v.id
"""


def _save_billed_units(lines: list) -> None:
    added = {
        span.pk: line.usage.billed_through[span.pk] - span.billed_units
        for line in lines
        for span in line.usage.spans
        if span.pk in line.usage.billed_through
        and span.billed_units != line.usage.billed_through[span.pk]
    }
    if added:
        with connection.cursor() as cursor:
            cursor.execute(BILLED_UNITS_SQL, [list(added), list(added.values())])


def _advance(subscription, start: datetime, end: datetime, *, read) -> None:
    subscription.period_index += 1
    subscription.current_period_start, subscription.current_period_end = start, end
    subscription.closed_usage_read_at = read.taken_at
    subscription.closed_usage_snapshot = read.token
    subscription.billing_error = subscription.billing_error_at = None
    if subscription.status == SubscriptionStatus.TRIALING:
        subscription.status = SubscriptionStatus.ACTIVE
    subscription.save(
        update_fields=[
            "period_index",
            "current_period_start",
            "current_period_end",
            "closed_usage_read_at",
            "closed_usage_snapshot",
            "billing_error",
            "billing_error_at",
            "status",
            "modified_at",
        ]
    )


def _end(subscription, *, at: datetime, read) -> None:
    subscription.status = SubscriptionStatus.CANCELED
    subscription.ended_at = at
    subscription.ends_at = at
    subscription.canceled_at = subscription.canceled_at or timezone.now()
    subscription.current_period_end = at
    subscription.closed_usage_read_at = read.taken_at
    subscription.closed_usage_snapshot = read.token
    subscription.billing_error = subscription.billing_error_at = None
    subscription.save(
        update_fields=[
            "status",
            "ended_at",
            "ends_at",
            "canceled_at",
            "current_period_end",
            "closed_usage_read_at",
            "closed_usage_snapshot",
            "billing_error",
            "billing_error_at",
            "modified_at",
        ]
    )
    subscription.subscription_prices.filter(ends_at__isnull=True).update(ends_at=at)


def credits_withheld(subscription, at: datetime) -> bool:
    """Past due for longer than DUNNING_GRACE_DAYS at `at`: a period starting then gets its
    credits only once the subscription recovers."""
    return (
        subscription.status == SubscriptionStatus.PAST_DUE
        and subscription.past_due_at is not None
        and subscription.past_due_at + timedelta(days=settings.DUNNING_GRACE_DAYS) <= at
    )


def grant_period_credits(subscription, *, unused: dict | None = None) -> None:
    """Credits of the (new) current period as `meter.credited` system events at its start; with
    rollover, the closing period's unused credits (`unused`: meter id → units) carry over as one
    more event. Past due beyond the grace, the period's own credits are withheld (recorded on the
    subscription, granted by `grant_withheld_credits`); credits carried over were earned before
    and still carry."""
    start = subscription.current_period_start
    withheld = credits_withheld(subscription, start)
    for benefit in subscription.product.benefits.all():
        if benefit.is_deleted:
            continue
        if not withheld:
            customer_meters.grant_credits(
                customer=subscription.customer,
                meter=benefit.meter,
                units=benefit.units,
                rollover=benefit.rollover,
                reason=f"subscription {subscription.pk}: {benefit.description}",
                timestamp=start,
            )
        left = (unused or {}).get(benefit.meter_id, 0)
        if benefit.rollover and left > 0:
            customer_meters.grant_credits(
                customer=subscription.customer,
                meter=benefit.meter,
                units=left,
                rollover=True,
                reason=f"subscription {subscription.pk}: unused credits rolled over",
                timestamp=start,
            )
    if withheld:
        subscription.credits_withheld_for = start
        Subscription.objects.filter(pk=subscription.pk).update(credits_withheld_for=start)


def grant_withheld_credits(subscription) -> None:
    """On recovery (the subscription's row locked by the caller): the current period's credits
    withheld at its start, granted once; a later period's close grants its own."""
    start = subscription.current_period_start
    if subscription.credits_withheld_for != start:
        return
    for benefit in subscription.product.benefits.all():
        if benefit.is_deleted:
            continue
        customer_meters.grant_credits(
            customer=subscription.customer,
            meter=benefit.meter,
            units=benefit.units,
            rollover=benefit.rollover,
            reason=f"subscription {subscription.pk}: {benefit.description} (after recovery)",
            timestamp=start,
        )
    subscription.credits_withheld_for = None
    Subscription.objects.filter(pk=subscription.pk).update(credits_withheld_for=None)
