"""Backfill: roll up the events stored before a meter (or its new definition) existed.

Works customer range by customer range under the organization's exclusive rollup lock
(`metering.locks`), so each event is rolled up exactly once: by the backfill when its customer is
above the cursor at the event's commit, by ingestion otherwise."""

from django.db import connection, transaction
from django.utils import timezone

from metering import locks, rollups, stores
from metering.models import Meter, MeterState

BACKFILL_CHUNK_EVENTS = 200_000

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
        locks.lock_organization(cursor, meter.organization_id, exclusive=True)
        meter = Meter.objects.select_for_update().get(pk=meter_id)
        if meter.state != MeterState.BACKFILLING or (
            version is not None and meter.definition_version != version
        ):
            return True
        store = stores.current()
        if not store.rollups:
            # no rollups to build: the customer meters of the customers with matching events
            store.backfill(meter)
            meter.state = MeterState.READY
            meter.backfill_finished_at = timezone.now()
            meter.save()
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
            compact=True,  # under the exclusive lock: straight into the compact tiers
        )
        meter.backfill_cursor = picked
        meter.backfill_events_done += events
        meter.save()
        return False
