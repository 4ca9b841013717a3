"""Spend thresholds: whenever a subscription's metered charges of the current period that no
invoice has billed yet reach its threshold (its own, or its product's default), those charges are
invoiced at once (`spend_threshold` invoices, collected like any other) and the period's close
bills only the rest.

What a threshold invoice bills is the invoice plan's (`billing.plan.plan_threshold`): per price,
the period's amount so far — tiers, flat amounts and caps over all the period's units — less what
the period's earlier threshold invoices billed of it, so the amounts of a period's invoices add
up to what one invoice for the whole period would have been. Units are netted the same way:
threshold invoices leave `SubscriptionPrice.billed_units` alone (that is the close's), and the
close measures the period whole and subtracts them (`billing.metered.threshold_tallies`).

Exactly once. Detection runs after an ingest commits (a task per ingested batch's customers) and
in a periodic sweep: a set-based read with no lock picks the candidates, then each is re-checked
in a transaction holding the subscription's row lock, reading its usage and its threshold
invoices after the lock is granted. Two checks crossing together queue on the lock; the second
sees the first one's invoice and finds nothing left to bill. Every change to a period's
threshold invoices (issued, voided) bumps `Subscription.threshold_version` under that lock, and a
close that measured the period before the change measures it again (`billing.cycles`)."""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from moneyed import Money

from billing import cycles, metered, plan
from billing.errors import BillingError
from billing.models import (
    LIVE_STATUSES,
    BillingReason,
    Invoice,
    InvoiceStatus,
    Product,
    Subscription,
)
from billing.money import check_storable, is_known_currency, to_minor, to_money
from metering import queries

logger = logging.getLogger(__name__)
BATCH_SIZE = 200


def threshold_of(subscription) -> Money | None:
    """The threshold in force: the subscription's own, else its product's default."""
    own = subscription.spend_threshold
    return own if own is not None else subscription.product.spend_threshold


def parse_threshold(minor, currency: str, *, field=("spend_threshold_amount",)) -> Money | None:
    """A threshold given in minor units (the wire's cents): a positive whole number, or None."""
    if minor is None:
        return None
    if isinstance(minor, bool) or not isinstance(minor, int) or minor <= 0:
        raise BillingError("A spend threshold is a positive amount in cents", field=field)
    if not is_known_currency(currency):
        raise BillingError("Unknown currency", field=field)
    check_storable(minor, currency, what="The spend threshold", field=field)
    return to_money(minor, currency)


def with_threshold() -> Q:
    return Q(spend_threshold__isnull=False) | Q(product__spend_threshold__isnull=False)


def organization_uses_thresholds(organization_id) -> bool:
    """Asked after every ingest: two index lookups (an organization's products, and its
    subscriptions with a threshold of their own)."""
    return (
        Product.objects.filter(
            organization_id=organization_id, spend_threshold__isnull=False
        ).exists()
        or Subscription.objects.filter(
            organization_id=organization_id, spend_threshold__isnull=False
        ).exists()
    )


def check(*, organization_id=None, customer_ids=None, now: datetime | None = None) -> list[Invoice]:
    """Issue the threshold invoices due now for these customers' live subscriptions (default:
    all of them, the sweep). Returns the invoices issued."""
    now = now or timezone.now()
    candidates = (
        Subscription.objects.filter(status__in=LIVE_STATUSES, current_period_end__gt=now)
        .filter(with_threshold())
        .order_by("pk")
    )
    if organization_id is not None:
        candidates = candidates.filter(organization_id=organization_id)
    if customer_ids is not None:
        candidates = candidates.filter(customer_id__in=list(customer_ids))
    issued, after = [], None
    while True:
        page = candidates.filter(pk__gt=after) if after else candidates
        ids = list(page.values_list("pk", flat=True)[:BATCH_SIZE])
        if not ids:
            return issued
        after = ids[-1]
        for subscription_id in reached(ids):
            try:
                invoice = issue_if_reached(subscription_id, now=now)
            except cycles.INFRASTRUCTURE:
                raise
            except BillingError as exc:  # isolation: the close will flag it; the others go on
                logger.warning(
                    "billing: spend threshold of %s not invoiced: %s", subscription_id, exc
                )
                continue
            if invoice is not None:
                issued.append(invoice)


def reached(ids: list) -> list:
    """Of these subscriptions, the ones whose un-invoiced charges look at or over their threshold
    (one set-based read, no lock: the candidates for `issue_if_reached`)."""
    loaded = list(cycles.live_subscriptions().filter(pk__in=ids))
    _read, usages, failures = cycles.measure(
        [(s, s.current_period_start, s.current_period_end) for s in loaded]
    )
    for subscription_id, exc in failures.items():
        logger.warning("billing: spend threshold of %s not measured: %s", subscription_id, exc)
    return [
        s.pk
        for s in loaded
        if s.pk in usages
        and (threshold := threshold_of(s)) is not None
        and plan.uninvoiced_amount(usages[s.pk]) >= to_minor(threshold)
    ]


def issue_if_reached(subscription_id, *, now: datetime | None = None) -> Invoice | None:
    """Under the subscription's row lock: measure the current period again and, if its
    un-invoiced charges reach the threshold, issue the threshold invoice for them. None when they
    don't (anymore), or the period is over (its close bills it)."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = (
            Subscription.objects.select_for_update()
            .filter(pk=subscription_id)
            .values("status", "current_period_end")
            .first()
        )
        if (
            locked is None
            or locked["status"] not in LIVE_STATUSES
            or locked["current_period_end"] <= now
        ):
            return None
        subscription = cycles.live_subscriptions().get(pk=subscription_id)
        threshold = threshold_of(subscription)
        if threshold is None:
            return None
        start, end = subscription.current_period_start, subscription.current_period_end
        # read committed, after the lock: every threshold invoice issued before is visible
        with queries.consistent_read():
            usage = metered.measure([(subscription, start, end)])[subscription_id]
        planned = plan.plan_threshold(subscription, usage)
        if planned.due < to_minor(threshold):
            return None
        invoice = cycles.issue(
            subscription,
            planned.draft,
            reason=BillingReason.SPEND_THRESHOLD,
            period_start=start,
            period_end=end,
            counts_for_discount=False,
        )
        changed(subscription_id)
        logger.info(
            "billing: spend threshold %s reached by %s: %s issued for %s",
            threshold,
            subscription_id,
            invoice.number,
            invoice.total,
        )
        return invoice


def changed(subscription_id) -> None:
    """The current period's threshold invoices changed (caller holds the subscription's row
    lock): a close that measured the period before this must measure it again."""
    Subscription.objects.filter(pk=subscription_id).update(
        threshold_version=F("threshold_version") + 1, modified_at=timezone.now()
    )


# --- reads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where a subscription's current period stands against its threshold."""

    threshold: Money  # in force: its own, else its product's
    uninvoiced: Money  # the period's charges that count toward it and no invoice billed yet
    invoices: list  # the period's threshold invoices (not void), oldest first


def progress(subscriptions: list[Subscription]) -> dict:
    """subscription id → Progress, for the live ones with a threshold in force (loaded through
    `cycles.live_subscriptions`): one measure of their current periods and one read of their
    threshold invoices, for any number of subscriptions."""
    watched = [
        s for s in subscriptions if s.status in LIVE_STATUSES and threshold_of(s) is not None
    ]
    if not watched:
        return {}
    with queries.consistent_read():
        usages = metered.measure(
            [(s, s.current_period_start, s.current_period_end) for s in watched]
        )
    start_of = {s.pk: s.current_period_start for s in watched}
    issued: dict = defaultdict(list)
    for invoice in (
        Invoice.objects.filter(
            subscription_id__in=list(start_of),
            billing_reason=BillingReason.SPEND_THRESHOLD,
            period_start__in=set(start_of.values()),
        )
        .exclude(status__in=(InvoiceStatus.VOID, InvoiceStatus.DRAFT))
        .order_by("created_at", "sequence")
    ):
        if invoice.period_start == start_of[invoice.subscription_id]:
            issued[invoice.subscription_id].append(invoice)
    return {
        s.pk: Progress(
            threshold_of(s),
            to_money(plan.uninvoiced_amount(usages[s.pk]), s.currency),
            issued[s.pk],
        )
        for s in watched
        if s.pk in usages
    }


# --- settings ----------------------------------------------------------------------------------


def validate(threshold: Money | None, currency: str) -> None:
    """A subscription's threshold: None, or a positive amount in its currency."""
    if threshold is None:
        return
    if str(threshold.currency) != currency:
        raise BillingError(
            f"The spend threshold must be in the subscription's currency ({currency})",
            field=("spend_threshold_amount",),
        )
    if threshold.amount <= 0:
        raise BillingError(
            "A spend threshold is a positive amount", field=("spend_threshold_amount",)
        )


@transaction.atomic
def set_subscription_threshold(subscription: Subscription, threshold: Money | None) -> None:
    """The subscription's own threshold (None: its product's default applies). Takes effect at
    the next check: charges already over it are invoiced then (the ingest-time check of the
    next batch, or the sweep)."""
    locked = Subscription.objects.select_for_update().get(pk=subscription.pk)
    validate(threshold, locked.currency)
    locked.spend_threshold = threshold
    locked.save(update_fields=["spend_threshold", "spend_threshold_currency", "modified_at"])
    subscription.spend_threshold = threshold
