"""What the usage page shows, read through metering's services.

This is the only portal module that imports metering: the numbers come from the same customer
meter service as customer state (`GET /v1/customers/{id}/state`), and the daily series from the
same aggregation code as `GET /v1/meters/{id}/quantities`, so the portal can never disagree with
the API."""

import decimal
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from django.utils import timezone
from djmoney.money import Money

from customers.models import Customer
from metering import customer_meters, quantities, queries
from metering.models import CustomerMeter, MeterUnit
from portal.extensions import ChargeEstimate, Period, registry

# What the page calls a meter's value over a period, and its daily chart, per aggregation: a
# max meter's number is the highest event value, not units used.
VALUE_LABELS = {
    "count": "Used",
    "sum": "Used",
    "avg": "Average",
    "max": "Highest",
    "min": "Lowest",
    "unique": "Distinct",
}
DAILY_LABELS = {
    "count": "{unit} per day",
    "sum": "{unit} per day",
    "avg": "daily average, {unit}",
    "max": "daily maximum, {unit}",
    "min": "daily minimum, {unit}",
    "unique": "distinct {unit} per day",
}
# Decimals shown: an average is a derived figure (2); sums, minima and maxima keep what event
# values commonly carry (up to 4); counts are whole. The exact value is in data-value.
PLACES = {"avg": 2}
DEFAULT_PLACES = 4


@dataclass(frozen=True)
class MeterUsage:
    customer_meter: CustomerMeter
    name: str
    unit_label: str
    func: str  # the meter's aggregation
    period: Period  # what `consumed` and the chart cover
    consumed: decimal.Decimal  # over `period` (billed: billing's numbers, late usage included)
    credited: int
    balance: decimal.Decimal  # credited − consumed, over `credits_window`
    # where the credits count from when that is not `period` (an unbilled meter's credits run
    # from its latest reset, or all time: `credits_since` None)
    credits_window: bool
    credits_since: datetime | None
    window_start: datetime | None  # the latest reset; None: the window is all time
    estimated_charge: Money | None = None
    # prepaid credits of the ledger (packs, staff grants): units, left, expires_at; burn order
    grants: tuple = ()

    @property
    def customer_meter_id(self) -> uuid.UUID:
        return self.customer_meter.pk

    @property
    def meter_id(self) -> uuid.UUID:
        return self.customer_meter.meter_id

    @property
    def value_label(self) -> str:
        return VALUE_LABELS.get(self.func, "Used")

    @property
    def places(self) -> int:
        return places(self.func)

    @property
    def credits_left(self) -> decimal.Decimal:
        return max(self.balance, decimal.Decimal(0))

    @property
    def beyond_credits(self) -> decimal.Decimal:
        return max(-self.balance, decimal.Decimal(0))


@dataclass(frozen=True)
class Usage:
    meters: list[MeterUsage]
    estimated_total: Money | None
    period: Period | None  # the one period of every meter; None when they differ (or no meter)


@dataclass(frozen=True)
class DailyUsage:
    customer_meter: CustomerMeter
    period: Period
    days: list[tuple[date, decimal.Decimal]]  # from the period's start up to now
    period_days: int  # days the whole period touches


# A chart longer than this shows its last days only (a period provider could return anything).
MAX_CHART_DAYS = 400


def unit_label(meter) -> str:
    if meter.unit == MeterUnit.TOKEN:
        return "tokens"
    if meter.unit == MeterUnit.CUSTOM and meter.custom_label:
        return meter.custom_label
    if meter.aggregation.get("func") == "unique":
        return "values"
    return "units"


def places(func: str) -> int:
    if func in ("count", "unique"):
        return 0
    return PLACES.get(func, DEFAULT_PLACES)


def daily_label(meter) -> str:
    func = meter.aggregation.get("func", "count")
    return DAILY_LABELS.get(func, DAILY_LABELS["count"]).format(unit=unit_label(meter))


def customer_usage(customer: Customer, *, now: datetime | None = None) -> Usage:
    """Every active meter of the customer over one period (`meter_period`): its value, its
    credits where it has any, and, when billing provides one, the estimated charge so far. The
    periods of all meters are looked up at once."""
    now = now or timezone.now()
    active = customer_meters.active_customer_meters(customer=customer)
    provided = registry.current_periods(customer=customer, meters=[cm.meter for cm, _ in active])
    meters = []
    for customer_meter, numbers in active:
        meter = customer_meter.meter
        period = _resolved_period(
            provided.get(meter.pk), window_start=numbers.window_start, now=now
        )
        if period.billed:
            consumed = numbers.consumed_units  # the numbers billing bills, late usage included
        else:
            consumed = period_value(customer_meter, period, now=now)
        meters.append(
            MeterUsage(
                customer_meter=customer_meter,
                name=meter.name,
                unit_label=unit_label(meter),
                func=meter.aggregation.get("func", "count"),
                period=period,
                consumed=consumed,
                credited=numbers.credited_units,
                balance=numbers.balance,
                credits_window=not period.billed,
                credits_since=numbers.window_start,
                window_start=numbers.window_start,
            )
        )
    grants = registry.credit_grants(customer=customer, meters=meters)
    if grants:
        meters = [replace(m, grants=tuple(grants.get(m.meter_id, ()))) for m in meters]
    periods = {(m.period.start, m.period.end) for m in meters}
    page_period = meters[0].period if len(periods) == 1 else None
    estimate: ChargeEstimate | None = registry.estimate_charges(customer=customer, meters=meters)
    if estimate is None:
        return Usage(meters=meters, estimated_total=None, period=page_period)
    priced = [replace(m, estimated_charge=estimate.by_meter.get(m.meter_id)) for m in meters]
    return Usage(meters=priced, estimated_total=estimate.total, period=page_period)


def period_value(customer_meter: CustomerMeter, period: Period, *, now: datetime):
    """The meter's value for the customer from the period's start up to now."""
    end = min(period.end, now)
    if end <= period.start:
        return decimal.Decimal(0)
    (value,) = queries.bucket_values(
        customer_meter.meter, customer_id=customer_meter.customer_id, buckets=[(period.start, end)]
    )
    return value


def own_customer_meter(customer: Customer, customer_meter_id) -> CustomerMeter | None:
    """The customer meter if it is this customer's and its meter is active, else None."""
    return (
        CustomerMeter.objects.select_related("meter", "customer")
        .filter(pk=customer_meter_id, customer=customer, meter__archived_at__isnull=True)
        .first()
    )


def _month_of(moment: datetime) -> Period:
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return Period(start, end, kind="month")


def window_start(customer_meter: CustomerMeter) -> datetime | None:
    """When the customer meter's window starts (its latest reset), None for all time."""
    return customer_meters.window_start_of(customer_meter)


def _resolved_period(
    provided: Period | None, *, window_start: datetime | None, now: datetime
) -> Period:
    if provided is None:
        provided = _month_of(now)
    if (
        not provided.billed
        and window_start is not None
        and provided.start < window_start < provided.end
    ):
        return replace(provided, start=window_start)
    return provided


_LOOK_UP = object()


def meter_period(customer_meter: CustomerMeter, *, window_start=_LOOK_UP, now: datetime) -> Period:
    """The one range the page shows a meter over, card and chart alike: billing's current
    period when billing provides one (the subscription that prices the meter, else the
    customer's), else the calendar month (UTC); a meter billing doesn't bill starts at its
    latest reset if that falls inside the range (looked up only then, unless given)."""
    provided = registry.current_periods(
        customer=customer_meter.customer, meters=[customer_meter.meter]
    ).get(customer_meter.meter_id)
    if window_start is _LOOK_UP:
        billed = provided is not None and provided.billed
        window_start = None if billed else customer_meters.window_start_of(customer_meter)
    return _resolved_period(provided, window_start=window_start, now=now)


def daily_usage(
    customer_meter: CustomerMeter,
    *,
    window_start=_LOOK_UP,
    now: datetime | None = None,
    period: Period | None = None,
) -> DailyUsage:
    """The meter's value per UTC day of its period (`meter_period` unless given), up to now.
    `window_start`: the latest reset if the caller knows it (else read when it matters)."""
    now = now or timezone.now()
    period = period or meter_period(customer_meter, window_start=window_start, now=now)
    period = replace(period, start=max(period.start, period.end - timedelta(days=MAX_CHART_DAYS)))
    period_days = len(quantities.buckets(period.start, period.end, "day", UTC))
    end = min(period.end, now)
    if end <= period.start:
        return DailyUsage(customer_meter, period, [], period_days)
    ranges = quantities.buckets(period.start, end, "day", UTC)
    values = queries.bucket_values(
        customer_meter.meter, customer_id=customer_meter.customer_id, buckets=ranges
    )
    days = [(start.date(), value) for (start, _end), value in zip(ranges, values, strict=True)]
    return DailyUsage(customer_meter, period, days, period_days)
