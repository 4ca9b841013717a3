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


@dataclass(frozen=True)
class MeterUsage:
    customer_meter: CustomerMeter
    name: str
    unit_label: str
    consumed: decimal.Decimal
    credited: int
    balance: decimal.Decimal
    window_start: datetime | None  # the latest reset; None: the window is all time
    estimated_charge: Money | None = None

    @property
    def customer_meter_id(self) -> uuid.UUID:
        return self.customer_meter.pk

    @property
    def meter_id(self) -> uuid.UUID:
        return self.customer_meter.meter_id


@dataclass(frozen=True)
class Usage:
    meters: list[MeterUsage]
    estimated_total: Money | None


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
    return "units"


def customer_usage(customer: Customer) -> Usage:
    """Every active meter of the customer with consumed, credited, balance and, when billing
    provides one, the estimated charge so far."""
    meters = [
        MeterUsage(
            customer_meter=customer_meter,
            name=customer_meter.meter.name,
            unit_label=unit_label(customer_meter.meter),
            consumed=numbers.consumed_units,
            credited=numbers.credited_units,
            balance=numbers.balance,
            window_start=numbers.window_start,
        )
        for customer_meter, numbers in customer_meters.active_customer_meters(customer=customer)
    ]
    estimate: ChargeEstimate | None = registry.estimate_charges(customer=customer, meters=meters)
    if estimate is None:
        return Usage(meters=meters, estimated_total=None)
    priced = [replace(m, estimated_charge=estimate.by_meter.get(m.meter_id)) for m in meters]
    return Usage(meters=priced, estimated_total=estimate.total)


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
    return Period(start, end)


def window_start(customer_meter: CustomerMeter) -> datetime | None:
    """When the customer meter's window starts (its latest reset), None for all time."""
    return customer_meters.numbers_for(customer_meter.meter, customer_meter.customer).window_start


def chart_period(
    customer_meter: CustomerMeter, *, window_start: datetime | None, now: datetime
) -> Period:
    """Billing's current period when billing provides it; else the calendar month (UTC), from
    the customer meter's latest reset if that falls inside it."""
    period = registry.current_period(customer=customer_meter.customer, meter=customer_meter.meter)
    if period is not None:
        return period
    month = _month_of(now)
    if window_start is not None and month.start < window_start < month.end:
        return Period(window_start, month.end)
    return month


def daily_usage(
    customer_meter: CustomerMeter, *, window_start: datetime | None, now: datetime | None = None
) -> DailyUsage:
    """The meter's value per UTC day of the current period, up to now."""
    now = now or timezone.now()
    period = chart_period(customer_meter, window_start=window_start, now=now)
    period = Period(max(period.start, period.end - timedelta(days=MAX_CHART_DAYS)), period.end)
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
