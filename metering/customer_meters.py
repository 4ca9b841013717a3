"""Customer meters: consumed, credited and balance of one meter for one customer, and the credits
and resets (system events) that shape them. Views, tasks, the admin and billing call these."""

import decimal
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from customers.models import Customer
from metering import aggregation, hooks, ingest, rollups, stores
from metering.errors import InvalidCredit, OrganizationMismatch
from metering.ingest import EventRow
from metering.models import CustomerMeter, Meter, MeterState

CREDITED = "meter.credited"
RESET = "meter.reset"


@dataclass(frozen=True)
class MeterNumbers:
    consumed_units: decimal.Decimal
    credited_units: int
    balance: decimal.Decimal
    window_start: datetime | None


SYSTEM_EVENTS_SQL = """
SELECT customer_id, name, metadata ->> 'meter_id', timestamp, metadata -> 'units'
FROM metering_event
WHERE customer_id = ANY(%s::uuid[]) AND source = 'system'
  AND name IN ('meter.credited', 'meter.reset')
ORDER BY customer_id, timestamp, ingested_at, id
"""


def _system_events_by_customer(customer_ids) -> dict:
    """customer id → its credits and resets in order, for many customers in one statement."""
    result: dict = {customer_id: [] for customer_id in customer_ids}
    with connection.cursor() as cursor:
        cursor.execute(SYSTEM_EVENTS_SQL, [[str(c) for c in customer_ids]])
        for customer_id, name, meter_id, moment, units in cursor.fetchall():
            # Django leaves jsonb undecoded on raw cursors.
            units = json.loads(units) if isinstance(units, str) else units
            result.setdefault(customer_id, []).append((name, meter_id, moment, units))
    return result


def _system_events(customer_id) -> list:
    return _system_events_by_customer([customer_id])[customer_id]


def _windows(system_events: list) -> dict[str, tuple[datetime | None, int]]:
    """meter id → (window start = latest reset, clamped credits since then)."""
    resets: dict[str, datetime] = {}
    for name, meter_id, moment, _units in system_events:
        if name == RESET and meter_id:
            resets[meter_id] = moment
    result: dict[str, tuple[datetime | None, int]] = {}
    for meter_id, moment in resets.items():
        result[meter_id] = (moment, 0)
    for name, meter_id, moment, units in system_events:
        # whole units only (grant_credits guarantees it; anything else was not written by it)
        if (
            name != CREDITED
            or not meter_id
            or isinstance(units, bool)
            or not isinstance(units, int)
        ):
            continue
        start, credited = result.get(meter_id, (None, 0))
        if start is not None and moment < start:
            continue
        result[meter_id] = (start, max(0, credited + units))
    return result


def balance_of(credited: int, consumed: decimal.Decimal) -> decimal.Decimal:
    return aggregation.EXACT.subtract(decimal.Decimal(credited), consumed)


def numbers_for(meter: Meter, customer: Customer) -> MeterNumbers:
    """One customer meter's numbers: the billing period's where a provider knows it, else over
    the customer meter's window."""
    period = hooks.period_numbers([(customer.pk, meter)]).get((customer.pk, meter.pk))
    if period is not None:
        return _period_numbers(*period)
    return _window_numbers(meter, customer)


def _window_numbers(meter: Meter, customer: Customer, system_events=None) -> MeterNumbers:
    if system_events is None:
        system_events = _system_events(customer.pk)
    window_start, credited = _windows(system_events).get(str(meter.pk), (None, 0))
    start = window_start or datetime(1, 1, 2, tzinfo=UTC)
    _, total = aggregation.compute(
        meter,
        buckets=[(start, aggregation.FAR_FUTURE)],
        customer_ids=[customer.pk],
        use_rollups=meter.state == MeterState.READY,
    )
    consumed = aggregation.final_value(meter.aggregation["func"], total)
    return MeterNumbers(consumed, credited, balance_of(credited, consumed), window_start)


def window_start_of(customer_meter: CustomerMeter) -> datetime | None:
    """When the customer meter's window starts (its latest reset), None for all time: one read
    of the customer's resets and credits, no usage aggregated."""
    windows = _windows(_system_events(customer_meter.customer_id))
    return windows.get(str(customer_meter.meter_id), (None, 0))[0]


def ensure_customer_meter(*, customer: Customer, meter: Meter) -> CustomerMeter:
    obj, _ = CustomerMeter.objects.get_or_create(
        customer=customer, meter=meter, defaults={"modified_at": timezone.now()}
    )
    return obj


# Whole history = the daily tier + pending deltas (the hourly tier holds the same as the daily
# one): a few dozen rows per customer meter whatever the history length.
# One statement for every pair, `unique` meters' distinct values included (a round trip
# saved per customer-state read).
ALL_TIME_SQL = f"""
WITH k AS (
    SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::bool[]) AS k(customer_id, meter_id, distinct_values)
), t AS (
    SELECT customer_id, meter_id, sum(event_count) AS c, sum(numeric_count) AS nc,
           COALESCE(sum(numeric_sum), 0) AS s, min(numeric_min) AS mn, max(numeric_max) AS mx
    FROM (
        SELECT r.customer_id, r.meter_id, {rollups.PARTIAL_COLUMNS} FROM k
        JOIN {rollups.DAY_TABLE} r ON r.customer_id = k.customer_id AND r.meter_id = k.meter_id
        UNION ALL
        SELECT r.customer_id, r.meter_id, {rollups.PARTIAL_COLUMNS} FROM k
        JOIN {rollups.DELTA_TABLE} r ON r.customer_id = k.customer_id AND r.meter_id = k.meter_id
    ) r
    GROUP BY customer_id, meter_id
), d AS (
    SELECT customer_id, meter_id, count(DISTINCT value_key) AS n
    FROM (
        SELECT r.customer_id, r.meter_id, r.value_key FROM k
        JOIN {rollups.UNIQUE_DAY_TABLE} r
          ON r.customer_id = k.customer_id AND r.meter_id = k.meter_id
        WHERE k.distinct_values
        UNION ALL
        SELECT r.customer_id, r.meter_id, r.value_key FROM k
        JOIN {rollups.UNIQUE_DELTA_TABLE} r
          ON r.customer_id = k.customer_id AND r.meter_id = k.meter_id
        WHERE k.distinct_values
    ) r
    GROUP BY customer_id, meter_id
)
SELECT customer_id, meter_id, t.c, t.nc, t.s, t.mn, t.mx, d.n
FROM t FULL JOIN d USING (customer_id, meter_id)
"""


def _all_time_partials(pairs: list[CustomerMeter]) -> dict:
    """(customer id, meter id) → Partial over all of that customer's rollups, for any number of
    pairs in one statement. Only valid for ready meters whose window is all time:
    rollups then hold every matching event, so no raw edge is needed."""
    if not pairs:
        return {}
    partials: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(
            ALL_TIME_SQL,
            [
                [str(cm.customer_id) for cm in pairs],
                [str(cm.meter_id) for cm in pairs],
                [cm.meter.aggregation.get("func") == "unique" for cm in pairs],
            ],
        )
        for customer_id, meter_id, count, numeric_count, total, low, high, distinct in (
            cursor.fetchall()
        ):
            partial = aggregation.Partial(
                event_count=count or 0,
                numeric_count=numeric_count or 0,
                numeric_sum=decimal.Decimal(total) if total is not None else decimal.Decimal(0),
                numeric_min=low,
                numeric_max=high,
            )
            if distinct is not None:
                partial.distinct = distinct
            partials[customer_id, meter_id] = partial
    return partials


def _period_numbers(consumed: decimal.Decimal, credited: int) -> MeterNumbers:
    return MeterNumbers(consumed, credited, balance_of(credited, consumed), None)


def customer_meters_with_numbers(customer_meters) -> list[tuple[CustomerMeter, MeterNumbers]]:
    """Numbers for many customer meters (with `customer` and `meter` selected). Where a
    registered period provider (billing) knows the current billing period, its numbers; else
    one statement for every customer's credits and resets, one grouped rollup statement (two
    with `unique` meters) for every ready meter whose window is all time (the usual case), and
    the general read (raw edges, backfilling meters) only for the rest."""
    customer_meters = list(customer_meters)
    if not customer_meters:
        return []
    periods = hooks.period_numbers([(cm.customer_id, cm.meter) for cm in customer_meters])
    numbers = {
        cm.pk: _period_numbers(*periods[cm.customer_id, cm.meter_id])
        for cm in customer_meters
        if (cm.customer_id, cm.meter_id) in periods
    }
    numbers.update(_computed_numbers([cm for cm in customer_meters if cm.pk not in numbers]))
    return [(cm, numbers[cm.pk]) for cm in customer_meters]


def _computed_numbers(customer_meters: list[CustomerMeter]) -> dict:
    """customer meter id → numbers over its window (all time, or since its latest reset)."""
    if not customer_meters:
        return {}
    system_events = _system_events_by_customer({cm.customer_id for cm in customer_meters})
    windows = {customer_id: _windows(events) for customer_id, events in system_events.items()}
    fast = [
        cm
        for cm in customer_meters
        if cm.meter.state == MeterState.READY
        and windows[cm.customer_id].get(str(cm.meter_id), (None, 0))[0] is None
    ]
    partials = stores.current().all_time_partials(fast)
    fast_ids = {cm.pk for cm in fast}
    result = {}
    for cm in customer_meters:
        if cm.pk in fast_ids:
            _, credited = windows[cm.customer_id].get(str(cm.meter_id), (None, 0))
            consumed = aggregation.final_value(
                cm.meter.aggregation["func"], partials.get((cm.customer_id, cm.meter_id))
            )
            result[cm.pk] = MeterNumbers(consumed, credited, balance_of(credited, consumed), None)
        else:
            result[cm.pk] = _window_numbers(cm.meter, cm.customer, system_events[cm.customer_id])
    return result


def _backfilling_matches(customer: Customer) -> None:
    """While a meter backfills, its customer meters may not exist yet: create them on read for
    customers that have matching events (raw path)."""
    backfilling = list(
        Meter.objects.filter(
            organization_id=customer.organization_id,
            state=MeterState.BACKFILLING,
            archived_at__isnull=True,
        )
    )
    if not backfilling:
        return  # the usual case: one cheap query on the (small) meters table
    present = set(
        CustomerMeter.objects.filter(customer=customer, meter__in=backfilling).values_list(
            "meter_id", flat=True
        )
    )
    for meter in backfilling:
        if meter.pk in present:
            continue
        _, total = aggregation.compute(
            meter,
            buckets=[(datetime(1, 1, 2, tzinfo=UTC), aggregation.FAR_FUTURE)],
            customer_ids=[customer.pk],
            use_rollups=False,
        )
        if total.event_count:
            ensure_customer_meter(customer=customer, meter=meter)


# Every non-archived meter of the organization with the customer's customer meter, if any: the
# customer meters to show and whether a backfilling meter may still lack one, in one statement
# (the customer state's metering part runs on a fixed budget of round trips).
METERS_WITH_CUSTOMER_METER_SQL = """
SELECT m.*, cm.id AS cm_id, cm.created_at AS cm_created_at, cm.modified_at AS cm_modified_at
FROM metering_meter m
LEFT JOIN metering_customermeter cm ON cm.meter_id = m.id AND cm.customer_id = %s
WHERE m.organization_id = %s AND m.archived_at IS NULL
ORDER BY m.name, m.id
"""


def _meters_with_customer_meter(customer: Customer) -> list[Meter]:
    return list(
        Meter.objects.raw(METERS_WITH_CUSTOMER_METER_SQL, [customer.pk, customer.organization_id])
    )


def active_customer_meters(*, customer: Customer) -> list[tuple[CustomerMeter, MeterNumbers]]:
    """The customer's meters of non-archived meters with their numbers, by meter name."""
    meters = _meters_with_customer_meter(customer)
    if any(m.cm_id is None and m.state == MeterState.BACKFILLING for m in meters):
        _backfilling_matches(customer)
        meters = _meters_with_customer_meter(customer)
    customer_meters = []
    for meter in meters:
        if meter.cm_id is None:
            continue
        customer_meter = CustomerMeter.from_db(
            "default",
            None,
            [meter.cm_id, customer.pk, meter.pk, meter.cm_created_at, meter.cm_modified_at],
        )
        customer_meter.customer, customer_meter.meter = customer, meter
        customer_meters.append(customer_meter)
    return customer_meters_with_numbers(customer_meters)


# --- credits and resets -------------------------------------------------------------------------


def _system_event(*, customer: Customer, name: str, metadata: dict, timestamp: datetime | None):
    row = EventRow(
        name=name,
        timestamp=(timestamp or datetime.now(UTC)).astimezone(UTC),
        customer_id=customer.pk,
        external_customer_id=None,
        external_id=None,
        parent_reference=None,
        metadata=metadata,
    )
    with transaction.atomic():
        ids = ingest.insert_events(organization=customer.organization, rows=[row], source="system")
    return ids[0]


def grant_credits(
    *,
    customer: Customer,
    meter: Meter,
    units: int,
    rollover: bool = False,
    reason: str = "",
    timestamp: datetime | None = None,
) -> uuid.UUID:
    """Record a `meter.credited` system event (units may be negative: a revocation)."""
    if meter.organization_id != customer.organization_id:
        raise OrganizationMismatch("Meter and customer belong to different organizations")
    if isinstance(units, bool) or not isinstance(units, int):
        raise InvalidCredit(f"Credits are whole units; got {units!r}")
    with transaction.atomic():
        event_id = _system_event(
            customer=customer,
            name=CREDITED,
            metadata={
                "meter_id": str(meter.pk),
                "units": units,
                "rollover": bool(rollover),
                "reason": reason,
            },
            timestamp=timestamp,
        )
        ensure_customer_meter(customer=customer, meter=meter)
    return event_id


def reset_meter(
    *, customer: Customer, meter: Meter, reason: str = "", timestamp: datetime | None = None
) -> uuid.UUID:
    """Record a `meter.reset` system event: the customer meter's window starts there."""
    if meter.organization_id != customer.organization_id:
        raise OrganizationMismatch("Meter and customer belong to different organizations")
    return _system_event(
        customer=customer,
        name=RESET,
        metadata={"meter_id": str(meter.pk), "reason": reason},
        timestamp=timestamp,
    )
