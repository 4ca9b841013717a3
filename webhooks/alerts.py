"""Usage alerts (Meterline extension): rules per meter that fire `customer.meter_threshold` once
per customer and billing period when the period's usage (units, or amount in cents) reaches the
threshold — or, for a `balance` rule, when the meter's credits left fall below it: once per
crossing, i.e. per period and units granted so far (new credits re-arm it; the ledger's grants
are never deleted, so that sum only grows).

Evaluated after an ingest commits, for the customers of that batch, set-based: one read of the
rules, one set-based read of the current period's usage of all those customers (the same numbers
the subscription and the upcoming invoice show), one INSERT … ON CONFLICT DO NOTHING of the
crossings. The unique (rule, customer, period) constraint decides which evaluation fires when
two run at once; only the rows this INSERT wrote become webhooks."""

import uuid
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import cycles, subscriptions
from billing.api.payloads import iso
from billing.models import LIVE_STATUSES, CreditGrant
from webhooks import delivery
from webhooks.models import AlertFiring, AlertMetric, AlertRule, WebhookEvent

EVENT_TYPE = "customer.meter_threshold"


def has_rules(organization_id) -> bool:
    return AlertRule.objects.filter(organization_id=organization_id, is_active=True).exists()


def _granted(rules: list[AlertRule], customer_ids: list) -> dict:
    """(customer id, meter id) → units ever granted by the ledger, for the balance rules' meters
    (one grouped read; none without such a rule)."""
    meter_ids = {rule.meter_id for rule in rules if rule.metric == AlertMetric.BALANCE}
    if not meter_ids:
        return {}
    rows = (
        CreditGrant.objects.filter(customer_id__in=customer_ids, meter_id__in=meter_ids)
        .values_list("customer_id", "meter_id")
        .annotate(units=Sum("units"))
    )
    return {(customer_id, meter_id): units for customer_id, meter_id, units in rows}


def _value(rule: AlertRule, priced) -> Decimal:
    if rule.metric == AlertMetric.UNITS:
        return Decimal(priced.consumed)
    if rule.metric == AlertMetric.AMOUNT:
        return Decimal(priced.amount)
    return Decimal(priced.credited + priced.credits_left) - Decimal(priced.consumed)


def _crossed(rule: AlertRule, value: Decimal) -> bool:
    if rule.metric == AlertMetric.BALANCE:
        return value < rule.threshold
    return value >= rule.threshold


def _crossings(rules: list[AlertRule], customer_ids: list) -> list[tuple]:
    meter_ids = {rule.meter_id for rule in rules}
    granted = _granted(rules, customer_ids)
    live = list(
        cycles.live_subscriptions()
        .filter(
            customer_id__in=customer_ids,
            status__in=LIVE_STATUSES,
            subscription_prices__price__meter_id__in=meter_ids,
        )
        .distinct()
    )
    found = []
    for subscription_id, lines in subscriptions.current_meters(live).items():
        subscription = next(s for s in live if s.pk == subscription_id)
        for priced in lines:
            meter_id = priced.meter_id
            for rule in rules:
                if rule.meter_id != meter_id or rule.customer_id not in (
                    None,
                    subscription.customer_id,
                ):
                    continue
                value = _value(rule, priced)
                if _crossed(rule, value):
                    crossing = (
                        granted.get((subscription.customer_id, meter_id), 0)
                        if rule.metric == AlertMetric.BALANCE
                        else 0
                    )
                    found.append((rule, subscription, value, crossing))
    return found


INSERT_SQL = f"""
INSERT INTO {AlertFiring._meta.db_table}
    (id, rule_id, customer_id, period_start, period_end, value, crossing, fired_at)
SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::timestamptz[], %s::timestamptz[],
                     %s::numeric[], %s::bigint[], %s::timestamptz[])
ON CONFLICT (rule_id, customer_id, period_start, crossing) DO NOTHING
RETURNING id
"""


def evaluate(organization_id, customer_ids: list, *, now: datetime | None = None) -> list:
    """Fire the rules these customers crossed in their current period; returns the webhook events
    recorded (the caller enqueues them)."""
    now = now or timezone.now()
    rules = list(
        AlertRule.objects.filter(organization_id=organization_id, is_active=True).filter(
            Q(customer__isnull=True) | Q(customer_id__in=customer_ids)
        )
    )
    if not rules or not customer_ids:
        return []
    crossings = _crossings(rules, customer_ids)
    if not crossings:
        return []
    ids = [uuid.uuid4() for _ in crossings]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                INSERT_SQL,
                [
                    ids,
                    [rule.pk for rule, _, _, _ in crossings],
                    [s.customer_id for _, s, _, _ in crossings],
                    [s.current_period_start for _, s, _, _ in crossings],
                    [s.current_period_end for _, s, _, _ in crossings],
                    [value for _, _, value, _ in crossings],
                    [crossing for _, _, _, crossing in crossings],
                    [now] * len(crossings),
                ],
            )
            fired = {row[0] for row in cursor.fetchall()}
        events: list[WebhookEvent] = []
        endpoints = delivery.subscribed_endpoints(organization_id, EVENT_TYPE)
        for firing_id, (rule, subscription, value, _) in zip(ids, crossings, strict=True):
            if firing_id in fired:
                events += delivery.record(
                    endpoints, EVENT_TYPE, _data(firing_id, rule, subscription, value), at=now
                )
    return events


def _data(firing_id, rule: AlertRule, subscription, value: Decimal) -> dict:
    customer = subscription.customer
    return {
        "id": str(firing_id),
        "rule_id": str(rule.pk),
        "rule_name": rule.name,
        "meter_id": str(rule.meter_id),
        "customer_id": str(customer.pk),
        "external_customer_id": customer.external_id,
        "subscription_id": str(subscription.pk),
        "metric": rule.metric,
        "threshold": format(rule.threshold.normalize(), "f"),
        "value": format(value.normalize(), "f"),
        "period_start": iso(subscription.current_period_start),
        "period_end": iso(subscription.current_period_end),
    }
