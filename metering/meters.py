"""Meter services: lifecycle (create / update / archive + backfill), customer meters (consumed,
credited, balance), credits and resets (system events). Views, tasks and the admin call these."""

import decimal
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from customers.models import Customer, Organization
from metering import aggregation, rollups
from metering.models import CustomerMeter, Meter, MeterState

CREDITED = "meter.credited"
RESET = "meter.reset"
BACKFILL_CHUNK_EVENTS = 200_000


# --- lifecycle --------------------------------------------------------------------------------


# Higher layers (billing) register the reasons they know: provider(meter) -> list[str].
_definition_change_blockers: list = []
_archive_blockers: list = []


def register_blockers(*, definition_change=None, archive=None) -> None:
    for registry, provider in (
        (_definition_change_blockers, definition_change),
        (_archive_blockers, archive),
    ):
        if provider is not None and provider not in registry:
            registry.append(provider)


def definition_change_blockers(meter: Meter) -> list[str]:
    """Reasons that forbid changing filter/aggregation (billing: usage of this meter on a
    finalized invoice)."""
    return [reason for provider in _definition_change_blockers for reason in provider(meter)]


def archive_blockers(meter: Meter) -> list[str]:
    """Reasons that forbid archiving (billing: an active price or credit benefit uses it)."""
    return [reason for provider in _archive_blockers for reason in provider(meter)]


def _jsonable(value):
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def create_meter(
    *,
    organization: Organization,
    name: str,
    filter: dict,
    aggregation: dict,
    unit: str = "scalar",
    custom_label: str | None = None,
    custom_multiplier: int | None = None,
    metadata: dict | None = None,
) -> Meter:
    """Create a meter; it applies to events already stored through a backfill (reads use raw
    events until the backfill is done)."""
    with transaction.atomic():
        has_events = _organization_has_events(organization.pk)
        meter = Meter.objects.create(
            organization=organization,
            name=name,
            filter=filter,
            aggregation=aggregation,
            unit=unit,
            custom_label=custom_label,
            custom_multiplier=custom_multiplier,
            metadata=_jsonable(metadata or {}),
            modified_at=timezone.now(),
            state=MeterState.BACKFILLING if has_events else MeterState.READY,
            backfill_started_at=timezone.now() if has_events else None,
        )
        if has_events:
            _enqueue_backfill(meter)
    return meter


def update_meter(*, meter: Meter, **changes) -> Meter:
    """Apply changes; a new filter or aggregation rebuilds the rollups like a create."""
    with transaction.atomic():
        meter = Meter.objects.select_for_update().get(pk=meter.pk)
        redefine = False
        for key in ("filter", "aggregation"):
            if key in changes and changes[key] != getattr(meter, key):
                redefine = True
        for key, value in changes.items():
            if key == "metadata":
                value = _jsonable(value)
            setattr(meter, key, value)
        meter.modified_at = timezone.now()
        if redefine:
            _reset_rollups(meter)
            _enqueue_backfill(meter)
        meter.save()
    return meter


def _reset_rollups(meter: Meter) -> None:
    with connection.cursor() as cursor:
        # Exclusive: no ingest is adding to the old definition's rollups meanwhile.
        rollups.lock_organization(cursor, meter.organization_id, exclusive=True)
        cursor.execute("DELETE FROM metering_meterrollup WHERE meter_id = %s", [meter.pk])
        cursor.execute("DELETE FROM metering_meteruniquerollup WHERE meter_id = %s", [meter.pk])
    meter.definition_version += 1
    meter.state = MeterState.BACKFILLING
    meter.backfill_cursor = None
    meter.backfill_events_done = 0
    meter.backfill_events_total = 0
    meter.backfill_started_at = timezone.now()
    meter.backfill_finished_at = None
    meter.backfill_error = ""


def start_rebuild(*, meter: Meter, enqueue: bool = True) -> Meter:
    """Drop a meter's rollups and rebuild them from events (reads use raw events meanwhile)."""
    with transaction.atomic():
        meter = Meter.objects.select_for_update().get(pk=meter.pk)
        _reset_rollups(meter)
        meter.save()
        if enqueue:
            _enqueue_backfill(meter)
    return meter


def set_archived(*, meter: Meter, archived: bool) -> Meter:
    meter.archived_at = (meter.archived_at or timezone.now()) if archived else None
    meter.modified_at = timezone.now()
    meter.save(update_fields=["archived_at", "modified_at"])
    return meter


def _organization_has_events(organization_id) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM metering_event WHERE organization_id = %s "
            "AND customer_id IS NOT NULL AND source = 'user')",
            [organization_id],
        )
        return cursor.fetchone()[0]


def _enqueue_backfill(meter: Meter) -> None:
    from metering.tasks import backfill_meter

    version = meter.definition_version
    backfill_meter.delay_on_commit(str(meter.pk), version)


# --- backfill -----------------------------------------------------------------------------------

NEXT_CUSTOMERS_SQL = """
SELECT c.id, (SELECT count(*) FROM metering_event e
              WHERE e.customer_id = c.id AND e.source = 'user')
FROM customers_customer c
WHERE c.organization_id = %s AND (%s::uuid IS NULL OR c.id > %s::uuid)
ORDER BY c.id LIMIT %s
"""


def backfill(meter_id, version: int | None = None, *, chunk_events: int = BACKFILL_CHUNK_EVENTS):
    """Roll up the events stored before the meter (or its new definition) existed, customer
    range by customer range. Each chunk runs under the organization's exclusive rollup lock and
    advances `backfill_cursor`; ingestion maintains the customers at or below the cursor. Safe
    to re-run: a chunk and its cursor commit together."""
    while True:
        done = backfill_step(meter_id, version, chunk_events=chunk_events)
        if done:
            return


def backfill_step(meter_id, version=None, *, chunk_events: int = BACKFILL_CHUNK_EVENTS) -> bool:
    """One chunk; returns True when the meter is ready (or gone / redefined meanwhile)."""
    with transaction.atomic(), connection.cursor() as cursor:
        meter = Meter.objects.filter(pk=meter_id).first()
        if meter is None or meter.state != MeterState.BACKFILLING:
            return True
        if version is not None and meter.definition_version != version:
            return True  # a newer definition has its own backfill
        rollups.lock_organization(cursor, meter.organization_id, exclusive=True)
        meter = Meter.objects.select_for_update().get(pk=meter_id)
        if meter.state != MeterState.BACKFILLING or (
            version is not None and meter.definition_version != version
        ):
            return True
        if not meter.backfill_events_total:
            cursor.execute(
                "SELECT count(*) FROM metering_event WHERE organization_id = %s "
                "AND customer_id IS NOT NULL AND source = 'user'",
                [meter.organization_id],
            )
            meter.backfill_events_total = cursor.fetchone()[0]
        # Pick customers until the chunk holds about `chunk_events` events (at least one).
        cursor.execute(
            NEXT_CUSTOMERS_SQL,
            [meter.organization_id, meter.backfill_cursor, meter.backfill_cursor, 200],
        )
        picked, events = None, 0
        for customer_id, count in cursor.fetchall():
            if picked is not None and events + count > chunk_events:
                break
            picked, events = customer_id, events + count
        if picked is None:
            meter.state = MeterState.READY
            meter.backfill_finished_at = timezone.now()
            meter.backfill_events_done = meter.backfill_events_total
            meter.save()
            return True
        definition = rollups.MeterDefinition(
            meter.pk,
            meter.filter,
            meter.aggregation,
            meter.state,
            None,
            meter.definition_version,
        )
        low = meter.backfill_cursor
        rollups.apply(
            cursor,
            [definition],
            source_sql=(
                "e.organization_id = %(org)s AND e.customer_id <= %(high)s"
                + (" AND e.customer_id > %(low)s" if low else "")
            ),
            source_params={"org": meter.organization_id, "high": picked, "low": low},
            ignore_cursor=True,
        )
        meter.backfill_cursor = picked
        meter.backfill_events_done += events
        meter.save()
        return False


# --- customer meters --------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterNumbers:
    consumed_units: decimal.Decimal
    credited_units: int
    balance: decimal.Decimal
    window_start: datetime | None


SYSTEM_EVENTS_SQL = """
SELECT name, metadata ->> 'meter_id', timestamp, metadata -> 'units'
FROM metering_event
WHERE customer_id = %s AND source = 'system' AND name IN ('meter.credited', 'meter.reset')
ORDER BY timestamp, ingested_at, id
"""


def _system_events(customer_id) -> list:
    with connection.cursor() as cursor:
        cursor.execute(SYSTEM_EVENTS_SQL, [customer_id])
        # Django leaves jsonb undecoded on raw cursors.
        return [
            (name, meter_id, moment, json.loads(units) if isinstance(units, str) else units)
            for name, meter_id, moment, units in cursor.fetchall()
        ]


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
        if name != CREDITED or not meter_id or not isinstance(units, int | float):
            continue
        start, credited = result.get(meter_id, (None, 0))
        if start is not None and moment < start:
            continue
        result[meter_id] = (start, max(0, credited + int(units)))
    return result


# --- billing-period windows ---------------------------------------------------------------------
# With an active subscription pricing a meter, the customer meter's window is the subscription's
# current billing period (usage attributed to it, late usage carried into it included). Billing
# sits above metering, so it registers a provider here instead of metering importing billing:
# provider(customer_id, meters) -> {meter_id: (consumed_units, credited_units)}.
_period_providers: list = []


def register_period_numbers(provider) -> None:
    if provider not in _period_providers:
        _period_providers.append(provider)


def _period_numbers(customer_id, meters: list[Meter]) -> dict:
    found: dict = {}
    for provider in _period_providers:
        found.update(provider(customer_id, meters))
    return found


def _with_period_numbers(customer_id, meters: list[Meter], numbers: dict) -> dict:
    """meter id → MeterNumbers, replaced by the billing period's numbers where there is one."""
    for meter_id, (consumed, credited) in _period_numbers(customer_id, meters).items():
        numbers[meter_id] = MeterNumbers(
            consumed, credited, decimal.Decimal(credited) - consumed, None
        )
    return numbers


def numbers_for(meter: Meter, customer: Customer, system_events=None) -> MeterNumbers:
    period = _period_numbers(customer.pk, [meter]).get(meter.pk)
    if period is not None:
        consumed, credited = period
        return MeterNumbers(consumed, credited, decimal.Decimal(credited) - consumed, None)
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
    return MeterNumbers(consumed, credited, decimal.Decimal(credited) - consumed, window_start)


def ensure_customer_meter(*, customer: Customer, meter: Meter) -> CustomerMeter:
    obj, _ = CustomerMeter.objects.get_or_create(
        customer=customer, meter=meter, defaults={"modified_at": timezone.now()}
    )
    return obj


ALL_TIME_TOTALS_SQL = """
SELECT meter_id, sum(event_count), sum(numeric_count), COALESCE(sum(numeric_sum), 0),
       min(numeric_min), max(numeric_max)
FROM metering_meterrollup WHERE customer_id = %s AND meter_id = ANY(%s::uuid[])
GROUP BY meter_id
"""

ALL_TIME_DISTINCT_SQL = """
SELECT meter_id, count(DISTINCT value_key) FROM metering_meteruniquerollup
WHERE customer_id = %s AND meter_id = ANY(%s::uuid[]) GROUP BY meter_id
"""


def _all_time_partials(customer_id, meters: list[Meter]) -> dict:
    """meter id → Partial over all of the customer's rollups, for several meters in one or two
    statements. Only valid for ready meters whose window is all time: rollups then hold every
    matching event, so no raw edge is needed."""
    if not meters:
        return {}
    ids = [str(meter.pk) for meter in meters]
    partials: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(ALL_TIME_TOTALS_SQL, [customer_id, ids])
        for meter_id, count, numeric_count, total, low, high in cursor.fetchall():
            partials[meter_id] = aggregation.Partial(
                event_count=count or 0,
                numeric_count=numeric_count or 0,
                numeric_sum=decimal.Decimal(total),
                numeric_min=low,
                numeric_max=high,
            )
        unique_ids = [str(m.pk) for m in meters if m.aggregation.get("func") == "unique"]
        if unique_ids:
            cursor.execute(ALL_TIME_DISTINCT_SQL, [customer_id, unique_ids])
            for meter_id, distinct in cursor.fetchall():
                partials.setdefault(meter_id, aggregation.Partial()).distinct = distinct
    return partials


def customer_meters_with_numbers(customer_meters) -> list[tuple[CustomerMeter, MeterNumbers]]:
    """Numbers for many customer meters. Per customer: one query for the system events (credits,
    resets), one grouped rollup query for every ready meter whose window is all time (the usual
    case), and the general read (raw edges, backfilling meters) only for the rest."""
    customer_meters = list(customer_meters)
    by_customer: dict = {}
    for customer_meter in customer_meters:
        by_customer.setdefault(customer_meter.customer_id, []).append(customer_meter)
    numbers: dict = {}
    for customer_id, group in by_customer.items():
        events = _system_events(customer_id)
        windows = _windows(events)
        all_time = [
            cm.meter
            for cm in group
            if cm.meter.state == MeterState.READY
            and windows.get(str(cm.meter_id), (None, 0))[0] is None
        ]
        partials = _all_time_partials(customer_id, all_time)
        fast = {meter.pk for meter in all_time}
        for cm in group:
            if cm.meter_id in fast:
                _, credited = windows.get(str(cm.meter_id), (None, 0))
                consumed = aggregation.final_value(
                    cm.meter.aggregation["func"], partials.get(cm.meter_id)
                )
                numbers[cm.pk] = MeterNumbers(
                    consumed, credited, decimal.Decimal(credited) - consumed, None
                )
            else:
                numbers[cm.pk] = numbers_for(cm.meter, cm.customer, events)
        by_meter = _with_period_numbers(
            customer_id, [cm.meter for cm in group], {cm.meter_id: numbers[cm.pk] for cm in group}
        )
        for cm in group:
            numbers[cm.pk] = by_meter[cm.meter_id]
    return [(cm, numbers[cm.pk]) for cm in customer_meters]


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


def customer_active_meters(*, customer: Customer) -> list[dict]:
    _backfilling_matches(customer)
    customer_meters = (
        CustomerMeter.objects.filter(customer=customer, meter__archived_at__isnull=True)
        .select_related("meter", "customer")
        .order_by("meter__name", "meter_id")
    )
    result = []
    for customer_meter, numbers in customer_meters_with_numbers(customer_meters):
        result.append(
            {
                "id": str(customer_meter.pk),
                "created_at": customer_meter.created_at.isoformat(),
                "modified_at": customer_meter.modified_at.isoformat()
                if customer_meter.modified_at
                else None,
                "meter_id": str(customer_meter.meter_id),
                "consumed_units": float(numbers.consumed_units),
                "credited_units": numbers.credited_units,
                "balance": float(numbers.balance),
            }
        )
    return result


# --- credits and resets -------------------------------------------------------------------------


def _system_event(*, customer: Customer, name: str, metadata: dict, timestamp: datetime | None):
    from metering.services import _Row, insert_events

    row = _Row(
        name=name,
        timestamp=(timestamp or datetime.now(UTC)).astimezone(UTC),
        customer_id=customer.pk,
        external_customer_id=None,
        external_id=None,
        parent_reference=None,
        metadata=metadata,
    )
    with transaction.atomic():
        ids = insert_events(organization=customer.organization, rows=[row], source="system")
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
        raise ValueError("Meter and customer belong to different organizations")
    if isinstance(units, bool) or not isinstance(units, int):
        raise ValueError("units must be an integer")
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
        raise ValueError("Meter and customer belong to different organizations")
    return _system_event(
        customer=customer,
        name=RESET,
        metadata={"meter_id": str(meter.pk), "reason": reason},
        timestamp=timestamp,
    )
