"""What a period's metered prices bill, for many subscriptions at once.

Usage is attributed by event timestamp. For `count` and `sum` meters a period bills

    consumed = value over [price start, period end) − units already billed by this price

which is the period's own usage plus the late usage of earlier, already closed periods (events
that arrived after their close). Summed over all closes this telescopes to the value over every
event since the price started: each unit is billed exactly once, whatever the arrival order.
`avg`/`min`/`max`/`unique` don't add up across periods: a period bills the value over its own
events plus the events of earlier periods that arrived after the last close read its usage (the
late arrivals join the period's set; `late_units` counts them).

After a plan change a period has several prices per meter, each over its own part of the period
(old prices until the change, new ones from it). The period's credits of a meter are used up by
those prices in time order. A price that ended before the period (replaced by a plan change)
still bills the late units of its own window, so a change never drops usage that arrives late.

The same numbers serve the cycle close, the upcoming invoice, the subscription's `meters` and
the customer meters, so they always agree."""

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from django.conf import settings

from billing import pricing, usage
from billing.invoices import LineDraft
from billing.models import PriceType, SubscriptionPrice
from billing.money import to_minor


@dataclass(frozen=True)
class Measure:
    cumulative: Decimal  # count/sum: value over [price start, period end); others: the period's
    period_units: Decimal  # events with timestamps in the period
    credited: int  # credits granted in the period
    additive: bool
    ended: bool = False  # the price ended before the period: late units only
    late_events: int = 0  # avg/min/max/unique: late arrivals that joined the period's set


@dataclass(frozen=True)
class MeteredLine:
    subscription_price: SubscriptionPrice
    consumed: Decimal
    late: Decimal
    credited: int
    billable: Decimal
    amount: int
    new_billed_units: Decimal

    def draft(self, *, period_start: datetime, period_end: datetime) -> LineDraft:
        """The line over the part of the period the price applied (the whole period when the
        price ended before it: a line of late units only)."""
        price = self.subscription_price.price
        meter = price.meter
        lo, hi = _applies(self.subscription_price, period_start, period_end)
        if hi <= lo:
            lo, hi = period_start, period_end
        return LineDraft(
            label=f"{price.product.name} — {meter.name}",
            period_start=lo,
            period_end=hi,
            amount=self.amount,
            quantity=self.billable,
            price=price,
            meter_id=meter.pk,
            unit_amount=price.unit_amount,
            consumed_units=self.consumed,
            credited_units=self.credited,
            late_units=self.late,
        )


def _applies(sp: SubscriptionPrice, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The part of [start, end) during which the price applies to the subscription."""
    lo = max(start, sp.starts_at)
    hi = min(end, sp.ends_at) if sp.ends_at else end
    return lo, max(lo, hi)


def metered_prices(subscription) -> list[SubscriptionPrice]:
    """Works with `subscription_prices` prefetched (with price, product and meter)."""
    return [sp for sp in subscription.subscription_prices.all() if sp.price.is_metered]


def measure(periods: list[tuple[object, datetime, datetime]]) -> dict:
    """(subscription, period start, period end) triples → {subscription price id: Measure}, with
    one set-based read per meter for usage and one for credits."""
    windows, credit_windows, kinds = [], [], {}
    for subscription, start, end in periods:
        for sp in metered_prices(subscription):
            if sp.starts_at >= end:
                continue  # the price does not apply yet (e.g. during a trial)
            meter = sp.price.meter
            additive = meter.aggregation.get("func") in usage.ADDITIVE
            ended = sp.ends_at is not None and sp.ends_at <= start
            lo, hi = _applies(sp, start, end)
            customer = subscription.customer_id
            late = None if additive else _late_arrivals(subscription, sp, start, lo)
            if ended and not additive and late is None:
                continue
            kinds[sp.pk] = (additive, ended)
            if not ended:
                windows.append(usage.Window((sp.pk, "period"), meter, customer, lo, hi, late))
                credit_windows.append(usage.Window(sp.pk, meter, customer, start, end))
            elif late is not None:
                windows.append(usage.Window((sp.pk, "period"), meter, customer, lo, lo, late))
            if additive:
                before_end = min(lo, sp.ends_at) if sp.ends_at else lo
                windows.append(
                    usage.Window((sp.pk, "before"), meter, customer, sp.starts_at, before_end)
                )
    values, late_events = usage.usage_and_late_in_windows(windows)
    credits = usage.credited_in_windows(credit_windows)
    result = {}
    for sp_id, (additive, ended) in kinds.items():
        period_units = values.get((sp_id, "period"), Decimal(0))
        before = values.get((sp_id, "before"), Decimal(0))
        result[sp_id] = Measure(
            cumulative=before + period_units if additive else period_units,
            period_units=period_units,
            credited=credits.get(sp_id, 0),
            additive=additive,
            ended=ended,
            late_events=late_events.get((sp_id, "period"), 0),
        )
    return result


def _late_arrivals(subscription, sp, start: datetime, lo: datetime):
    """For avg/min/max/unique: the events of earlier periods (back to BILLING_LATE_LOOKBACK,
    never before the price started) that arrived after the last close read its usage."""
    since = subscription.closed_usage_read_at
    if since is None:
        return None
    late_end = min(lo, sp.ends_at) if sp.ends_at else lo
    late_start = max(sp.starts_at, start - settings.BILLING_LATE_LOOKBACK)
    if late_start >= late_end:
        return None
    return usage.LateArrivals(late_start, late_end, since)


def line(sp: SubscriptionPrice, found: Measure) -> MeteredLine:
    """Price one metered price's line from its measure and the units it billed so far."""
    if found.additive:
        consumed = found.cumulative - sp.billed_units
        late = consumed - found.period_units
        new_billed = found.cumulative
    else:
        consumed, late, new_billed = found.period_units, Decimal(found.late_events), sp.billed_units
    billable = pricing.billable_units(consumed=consumed, credited=found.credited)
    price = sp.price
    cap = price.cap_amount
    amount = pricing.metered_amount(
        unit_amount=price.unit_amount if price.amount_type == PriceType.METERED_UNIT else None,
        tiers=price.tiers if price.amount_type == PriceType.METERED_TIERS else None,
        units=billable,
        cap_amount=to_minor(cap) if cap is not None else None,
    )
    return MeteredLine(sp, consumed, late, found.credited, billable, amount, new_billed)


def lines(subscription, measures: dict) -> list[MeteredLine]:
    """The subscription's metered lines for a measured period, in time order: each meter's
    credits of the period go to its prices in the order they applied. A price that ended before
    the period only appears when late units arrived for it."""
    prices = [sp for sp in metered_prices(subscription) if sp.pk in measures]
    prices.sort(key=lambda sp: (sp.starts_at, str(sp.pk)))
    period_credits: dict = {}
    for sp in prices:
        meter_id = sp.price.meter_id
        period_credits[meter_id] = max(period_credits.get(meter_id, 0), measures[sp.pk].credited)
    result = []
    for sp in prices:
        meter_id = sp.price.meter_id
        found = replace(measures[sp.pk], credited=period_credits[meter_id])
        priced = line(sp, found)
        period_credits[meter_id] = max(found.credited - max(priced.consumed, Decimal(0)), 0)
        if found.ended and priced.consumed == 0 and priced.late == 0:
            continue
        result.append(priced)
    return result


def current_lines(subscription) -> list[MeteredLine]:
    """The current period's metered lines so far (what its invoice will bill if closed now)."""
    found = measure(
        [(subscription, subscription.current_period_start, subscription.current_period_end)]
    )
    return lines(subscription, found)


def merged_by_meter(priced_lines: list[MeteredLine]) -> list[MeteredLine]:
    """One line per meter (the figures a customer sees: a customer meter, the subscription's
    `meters`): a plan change's old and new prices of one meter added up; the credits are the
    period's, counted once."""
    merged: dict = {}
    for priced in priced_lines:
        meter_id = priced.subscription_price.price.meter_id
        seen = merged.get(meter_id)
        if seen is None:
            merged[meter_id] = priced
            continue
        merged[meter_id] = MeteredLine(
            subscription_price=priced.subscription_price,
            consumed=seen.consumed + priced.consumed,
            late=seen.late + priced.late,
            credited=seen.credited,
            billable=seen.billable + priced.billable,
            amount=seen.amount + priced.amount,
            new_billed_units=priced.new_billed_units,
        )
    return list(merged.values())
