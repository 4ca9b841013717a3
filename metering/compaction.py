"""Compaction: fold committed rollup deltas into the compact hourly and daily tiers.

Per organization, one transaction under the organization's rollup lock in shared mode (so it
never runs alongside a backfill chunk, a meter redefinition or a deletion, which hold it
exclusively; an organization locked that way is skipped until the next run) moves the deltas with `DELETE … RETURNING` into both tiers. Readers add compact
rows and deltas in one statement: before the commit they see the deltas, after it the compact
rows, never both. Deltas of transactions still in flight are invisible to the DELETE and stay
for the next run. Concurrent compactions are serialized by a transaction-level advisory lock
(a second one returns at once)."""

from django.db import connection, transaction

from metering import locks
from metering.rollups import (
    DELTA_ARRAYS,
    DELTA_ROWS,
    TIER_WRITES,
    UNIQUE_DAY_TABLE,
    UNIQUE_DELTA_TABLE,
    UNIQUE_HOUR_TABLE,
)

# a delta row holds meters of one organization: its first meter names it
PENDING_ORGANIZATIONS_SQL = f"""
SELECT DISTINCT m.organization_id FROM metering_meter m
WHERE m.id IN (SELECT DISTINCT d.meter_ids[1] FROM {DELTA_ROWS} d)
   OR EXISTS (SELECT 1 FROM {UNIQUE_DELTA_TABLE} d WHERE d.meter_id = m.id)
"""

# Counts (meter, customer, hour, transaction) partials moved, as when each had its own row.
MOVE_PARTIALS_SQL = f"""
WITH moved AS (
    DELETE FROM {DELTA_ROWS} WHERE meter_ids && %(meters)s::uuid[]
    RETURNING customer_id, bucket, {DELTA_ARRAYS}
), entries AS MATERIALIZED (
    SELECT u.meter_id, moved.customer_id, moved.bucket, u.event_count, u.numeric_count,
           u.numeric_sum, u.numeric_min, u.numeric_max
    FROM moved CROSS JOIN LATERAL unnest({DELTA_ARRAYS})
         AS u(meter_id, event_count, numeric_count, numeric_sum, numeric_min, numeric_max)
), agg AS MATERIALIZED (
    SELECT meter_id, customer_id, bucket, sum(event_count) AS c, sum(numeric_count) AS nc,
           sum(numeric_sum) AS s, min(numeric_min) AS mn, max(numeric_max) AS mx
    FROM entries GROUP BY 1, 2, 3
), {TIER_WRITES}
SELECT (SELECT count(*) FROM entries)
"""

MOVE_UNIQUE_SQL = f"""
WITH moved AS (
    DELETE FROM {UNIQUE_DELTA_TABLE} WHERE meter_id = ANY(%(meters)s::uuid[])
    RETURNING meter_id, customer_id, bucket, value_key
), h AS (
    INSERT INTO {UNIQUE_HOUR_TABLE} (meter_id, customer_id, bucket, value_key)
    SELECT DISTINCT meter_id, customer_id, bucket, value_key FROM moved ORDER BY 1, 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING 1
), dy AS (
    INSERT INTO {UNIQUE_DAY_TABLE} (meter_id, customer_id, bucket, value_key)
    SELECT DISTINCT meter_id, customer_id, date_trunc('day', bucket, 'UTC'), value_key
    FROM moved ORDER BY 1, 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved)
"""

COMPACTION_LOCK = (
    "SELECT pg_try_advisory_xact_lock("
    f"hashtextextended('rollup compaction', {locks.COMPACTION_NAMESPACE}))"
)


def compact_organization(organization_id) -> int | None:
    """Fold the organization's committed deltas; returns the number of delta rows moved, or
    None when another compaction holds the lock or the organization is locked exclusively."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(COMPACTION_LOCK)
        if not cursor.fetchone()[0]:
            return None
        if not locks.try_lock_organization_shared(cursor, organization_id):
            return None  # a backfill chunk or a rebuild holds it: next round
        # the meter list is read after the lock: a meter deleted meanwhile took its deltas along
        cursor.execute(
            "SELECT array_agg(id) FROM metering_meter WHERE organization_id = %s",
            [organization_id],
        )
        meters = cursor.fetchone()[0]
        if not meters:
            return 0
        cursor.execute(MOVE_PARTIALS_SQL, {"meters": meters})
        moved = cursor.fetchone()[0]
        cursor.execute(MOVE_UNIQUE_SQL, {"meters": meters})
        return moved + cursor.fetchone()[0]


def compact_rollups() -> int:
    """Fold every organization's committed deltas (the periodic job); returns rows moved."""
    with connection.cursor() as cursor:
        cursor.execute(PENDING_ORGANIZATIONS_SQL)
        organizations = [row[0] for row in cursor.fetchall()]
    total = 0
    for organization_id in organizations:
        total += compact_organization(organization_id) or 0
    return total
