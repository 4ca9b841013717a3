"""Rollups per (meter, customer): partial aggregates of the matching events, in three tiers.

Storage (docs/meters.md, "Rollup storage"):

- **deltas** (`metering_meterrollup_delta`, `metering_meteruniquerollup_delta`): ingestion and
  linking append partials per (meter, customer, hour) *and transaction* (`txid`). Concurrent
  ingests never write the same row, so they never wait for each other's commit, and one
  statement reads the batch once for all meters. The partials are stored one row per
  (customer, hour, transaction) with every meter's as parallel arrays (`metering_rollup_delta`:
  a third of the rows and key entries per batch with six meters); `metering_meterrollup_delta`
  is the view that unnests them, which every reader uses.
- **compact hourly** and **compact daily** (`*_hour`, `*_day`): compaction (`metering.compaction`)
  moves committed deltas into both in one transaction; backfills write them directly.
- Readers add compact + pending deltas **in one statement**, so they see a committed batch either
  as deltas or as compact rows, never twice and never not at all (read-your-writes holds).

Concurrency (`metering.locks` has the whole discipline):

- Every writer of rollups holds the organization's rollup lock: ingestion, linking and
  compaction in shared mode, a backfill chunk (and meter creation, redefinition, deletion) in
  exclusive mode. A backfill chunk therefore sees every event whose transaction did not see its
  progress (`backfill_cursor`), and every later transaction sees the new cursor: each event is
  rolled up exactly once. Compaction never runs alongside a rebuild or delete of the same org.
- Ingestion only inserts rows keyed by its own transaction; compaction and backfills (never at
  the same time for one organization) upsert compact rows in key order.
"""

import json
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from metering import filters, locks

METERS_SQL = """
SELECT id, filter, aggregation, state, backfill_cursor, definition_version
FROM metering_meter WHERE organization_id = %s ORDER BY id
"""

HOUR_TABLE = "metering_meterrollup_hour"
DAY_TABLE = "metering_meterrollup_day"
DELTA_TABLE = "metering_meterrollup_delta"  # a view over DELTA_ROWS: read only
DELTA_ROWS = "metering_rollup_delta"
DELTA_ARRAYS = "meter_ids, event_counts, numeric_counts, numeric_sums, numeric_mins, numeric_maxs"
UNIQUE_HOUR_TABLE = "metering_meteruniquerollup_hour"
UNIQUE_DAY_TABLE = "metering_meteruniquerollup_day"
UNIQUE_DELTA_TABLE = "metering_meteruniquerollup_delta"
ALL_TABLES = (
    HOUR_TABLE,
    DAY_TABLE,
    DELTA_TABLE,
    UNIQUE_HOUR_TABLE,
    UNIQUE_DAY_TABLE,
    UNIQUE_DELTA_TABLE,
)

PARTIAL_COLUMNS = "event_count, numeric_count, numeric_sum, numeric_min, numeric_max"
ADD_PARTIALS = """
    event_count = r.event_count + EXCLUDED.event_count,
    numeric_count = r.numeric_count + EXCLUDED.numeric_count,
    numeric_sum = r.numeric_sum + EXCLUDED.numeric_sum,
    numeric_min = LEAST(r.numeric_min, EXCLUDED.numeric_min),
    numeric_max = GREATEST(r.numeric_max, EXCLUDED.numeric_max)"""


@dataclass(frozen=True)
class MeterDefinition:
    id: object
    filter: dict
    aggregation: dict
    state: str
    backfill_cursor: object
    version: int


def organization_meters(cursor, organization_id) -> list[MeterDefinition]:
    """All meters of the organization (archived ones too: their numbers stay readable). One
    indexed query per ingest; reading it after the shared lock is what makes backfills exact."""
    cursor.execute(METERS_SQL, [organization_id])
    # Django leaves jsonb undecoded on raw cursors.
    return [
        MeterDefinition(id_, _json(filter_), _json(aggregation), state, backfill_cursor, version)
        for id_, filter_, aggregation, state, backfill_cursor, version in cursor.fetchall()
    ]


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def _to_named(sql: str, positional: list, prefix: str) -> tuple[str, dict]:
    """Turn compiled expressions' %s into named params so several meters mix in one text."""
    params = {}
    parts = sql.split("%s")
    out = [parts[0]]
    for index, part in enumerate(parts[1:]):
        name = f"{prefix}_{index}"
        params[name] = positional[index]
        out.append(f"%({name})s{part}")
    return "".join(out), params


def _meter_branch(meter: MeterDefinition, index: int, cursor_sql: str) -> tuple[str, dict]:
    """One meter's matching events of the batch: (meter, customer, hour, number, value key)."""
    filter_sql, filter_params = filters.compile_filter(meter.filter)
    func = meter.aggregation.get("func")
    prop = meter.aggregation.get("property")
    if func in filters.PROPERTY_FUNCS:
        num_sql, num_params = filters.numeric_sql(prop)
    else:
        num_sql, num_params = "NULL::numeric", []
    if func == "unique":
        key_sql, key_params = filters.value_key_sql(prop)
    else:
        key_sql, key_params = "NULL::text", []
    sql = (
        f"SELECT %s::uuid AS meter_id, e.customer_id, e.bucket, {num_sql} AS num, "
        f"{key_sql} AS vk FROM ev e WHERE {cursor_sql} AND {filter_sql}"
    )
    return _to_named(sql, [meter.id, *num_params, *key_params, *filter_params], f"m{index}")


# --- the statements -----------------------------------------------------------------------------

HEAD = """
WITH ev AS MATERIALIZED (
    SELECT e.customer_id, date_trunc('hour', e.timestamp, 'UTC') AS bucket, e.name, e.source,
           e.timestamp, e.metadata
    FROM metering_event e
    WHERE __SOURCE__ AND e.customer_id IS NOT NULL AND e.source = 'user'
), parts AS MATERIALIZED (
__BRANCHES__
), agg AS MATERIALIZED (
    SELECT meter_id, customer_id, bucket, count(*) AS c, count(num) AS nc,
           COALESCE(sum(num), 0) AS s, min(num) AS mn, max(num) AS mx
    FROM parts GROUP BY meter_id, customer_id, bucket
)"""

CUSTOMER_METERS = """, cm AS (
    INSERT INTO metering_customermeter AS m (id, customer_id, meter_id, created_at, modified_at)
    SELECT gen_random_uuid(), customer_id, meter_id, now(), now()
    FROM (SELECT DISTINCT meter_id, customer_id FROM agg) x
    -- existing pairs (nearly all, after a customer's first batches) are skipped by a plain
    -- index probe instead of a speculative insertion each
    WHERE NOT EXISTS (SELECT 1 FROM metering_customermeter o
                      WHERE o.customer_id = x.customer_id AND o.meter_id = x.meter_id)
    ORDER BY meter_id, customer_id
    -- DO NOTHING, not a modified_at bump: rewriting the row would lock every customer meter a
    -- batch touches until commit and serialize concurrent ingests of the same customers
    ON CONFLICT (customer_id, meter_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM parts)
"""

# Ingestion: rows keyed by this transaction only, one per (customer, hour) with every meter's
# partials. A second batch in the same transaction (a caller's atomic block) merges into its
# own rows meter by meter; nobody else ever touches them before commit.
DELTA_WRITES = f""", d AS (
    INSERT INTO {DELTA_ROWS} AS r (customer_id, bucket, txid, {DELTA_ARRAYS})
    SELECT customer_id, bucket, pg_current_xact_id()::text::bigint,
           array_agg(meter_id ORDER BY meter_id), array_agg(c ORDER BY meter_id),
           array_agg(nc ORDER BY meter_id), array_agg(s ORDER BY meter_id),
           array_agg(mn ORDER BY meter_id), array_agg(mx ORDER BY meter_id)
    FROM agg GROUP BY customer_id, bucket
    ON CONFLICT (customer_id, bucket, txid) DO UPDATE SET ({DELTA_ARRAYS}) = (
        SELECT array_agg(m ORDER BY m), array_agg(c ORDER BY m), array_agg(nc ORDER BY m),
               array_agg(s ORDER BY m), array_agg(mn ORDER BY m), array_agg(mx ORDER BY m)
        FROM (
            SELECT m, sum(c)::bigint AS c, sum(nc)::bigint AS nc, sum(s) AS s, min(mn) AS mn,
                   max(mx) AS mx
            FROM (
                SELECT * FROM unnest(r.meter_ids, r.event_counts, r.numeric_counts,
                                     r.numeric_sums, r.numeric_mins, r.numeric_maxs)
                UNION ALL
                SELECT * FROM unnest(EXCLUDED.meter_ids, EXCLUDED.event_counts,
                                     EXCLUDED.numeric_counts, EXCLUDED.numeric_sums,
                                     EXCLUDED.numeric_mins, EXCLUDED.numeric_maxs)
            ) x(m, c, nc, s, mn, mx)
            GROUP BY m
        ) merged
    )
    RETURNING 1
), u AS (
    INSERT INTO {UNIQUE_DELTA_TABLE} (meter_id, customer_id, bucket, txid, value_key)
    SELECT DISTINCT meter_id, customer_id, bucket, pg_current_xact_id()::text::bigint, vk
    FROM parts WHERE vk IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1
)"""

# Adds the hourly partials of a CTE `agg(meter_id, customer_id, bucket, c, nc, s, mn, mx)` to
# both compact tiers, in key order: shared by backfills and compaction.
TIER_WRITES = f"""h AS (
    INSERT INTO {HOUR_TABLE} AS r (meter_id, customer_id, bucket, {PARTIAL_COLUMNS})
    SELECT meter_id, customer_id, bucket, c, nc, s, mn, mx FROM agg ORDER BY 1, 2, 3
    ON CONFLICT (meter_id, customer_id, bucket) DO UPDATE SET {ADD_PARTIALS}
    RETURNING 1
), dy AS (
    INSERT INTO {DAY_TABLE} AS r (meter_id, customer_id, bucket, {PARTIAL_COLUMNS})
    SELECT meter_id, customer_id, date_trunc('day', bucket, 'UTC'), sum(c), sum(nc), sum(s),
           min(mn), max(mx)
    FROM agg GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (meter_id, customer_id, bucket) DO UPDATE SET {ADD_PARTIALS}
    RETURNING 1
)"""

# Backfill: straight into both compact tiers (it holds the organization's exclusive lock, so no
# compaction of these meters runs meanwhile).
COMPACT_WRITES = f""", {TIER_WRITES}, uh AS (
    INSERT INTO {UNIQUE_HOUR_TABLE} (meter_id, customer_id, bucket, value_key)
    SELECT DISTINCT meter_id, customer_id, bucket, vk FROM parts WHERE vk IS NOT NULL
    ORDER BY 1, 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING 1
), ud AS (
    INSERT INTO {UNIQUE_DAY_TABLE} (meter_id, customer_id, bucket, value_key)
    SELECT DISTINCT meter_id, customer_id, date_trunc('day', bucket, 'UTC'), vk
    FROM parts WHERE vk IS NOT NULL ORDER BY 1, 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING 1
)"""

_STATEMENTS: OrderedDict = OrderedDict()
_STATEMENT_CACHE_SIZE = 256  # bounded: a worker's memory stays flat (P6)


def _statement(meters: list[tuple[MeterDefinition, str]], compact: bool) -> tuple[str, dict]:
    """The one statement that rolls the source events up for all `meters` (with their cursor
    condition), cached per meter set and definition version."""
    key = (compact, tuple((m.id, m.version, cursor_sql) for m, cursor_sql in meters))
    cached = _STATEMENTS.get(key)
    if cached is not None:
        _STATEMENTS.move_to_end(key)
        return cached
    branches, params = [], {}
    for index, (meter, cursor_sql) in enumerate(meters):
        sql, named = _meter_branch(meter, index, cursor_sql)
        branches.append(sql)
        params.update(named)
    sql = (
        HEAD.replace("__BRANCHES__", "\nUNION ALL\n".join(branches))
        + (COMPACT_WRITES if compact else DELTA_WRITES)
        + CUSTOMER_METERS
    )
    _STATEMENTS[key] = (sql, params)
    if len(_STATEMENTS) > _STATEMENT_CACHE_SIZE:
        _STATEMENTS.popitem(last=False)
    return sql, params


def apply(
    cursor,
    meters: list[MeterDefinition],
    *,
    source_sql: str,
    source_params: dict,
    ignore_cursor: bool = False,
    compact: bool = False,
) -> int:
    """Add the events selected by `source_sql` (over alias `e`) to the meters' rollups, in one
    statement: as this transaction's deltas, or (`compact`, backfills) into the compact tiers.
    Backfilling meters only take customers at or below their cursor (the rest is the backfill's
    job) unless `ignore_cursor`. Returns the number of (meter, event) matches."""
    selected = []
    cursor_params = {}
    for meter in meters:
        if not meter.filter or not meter.aggregation:
            continue
        if meter.state == "ready" or ignore_cursor:
            selected.append((meter, "TRUE"))
        elif meter.backfill_cursor is not None:
            name = f"cursor_{len(selected)}"
            selected.append((meter, f"e.customer_id <= %({name})s"))
            cursor_params[name] = meter.backfill_cursor
    if not selected:
        return 0
    sql, params = _statement(selected, compact)
    cursor.execute(
        sql.replace("__SOURCE__", source_sql), {**params, **source_params, **cursor_params}
    )
    return cursor.fetchone()[0]


def after_insert(cursor, *, organization_id, event_ids: list) -> None:
    locks.lock_organization(cursor, organization_id)
    meters = organization_meters(cursor, organization_id)
    if meters:
        apply(cursor, meters, source_sql="e.id = ANY(%(ids)b)", source_params={"ids": event_ids})


REBUILT_TABLES = (
    HOUR_TABLE,
    DAY_TABLE,
    DELTA_ROWS,
    UNIQUE_HOUR_TABLE,
    UNIQUE_DAY_TABLE,
    UNIQUE_DELTA_TABLE,
)


def rebuild_customer_days(cursor, organization_id, customer_days) -> None:
    """Roll up one customer's UTC days again from their events, in every tier (a usage
    correction took an event out or put one in: min, max and unique partials can't be undone
    by a delta). The caller holds the organization's exclusive lock, so no ingest or compaction
    writes these rows meanwhile."""
    meters = organization_meters(cursor, organization_id)
    for customer_id, day in sorted(set(customer_days)):
        bounds = {"rb_customer": customer_id, "rb_lo": day, "rb_hi": day + DAY}
        for table in REBUILT_TABLES:
            cursor.execute(
                f"DELETE FROM {table} WHERE customer_id = %(rb_customer)s "
                "AND bucket >= %(rb_lo)s AND bucket < %(rb_hi)s",
                bounds,
            )
        if meters:
            apply(
                cursor,
                meters,
                source_sql=(
                    "e.customer_id = %(rb_customer)s AND e.timestamp >= %(rb_lo)s "
                    "AND e.timestamp < %(rb_hi)s"
                ),
                source_params=bounds,
                compact=True,
            )


# One meter's entries out of the delta rows that hold it; rows left empty go.
REMOVE_METER_FROM_DELTA_ROWS = [
    f"""UPDATE {DELTA_ROWS} d SET ({DELTA_ARRAYS}) = (
        SELECT COALESCE(array_agg(m ORDER BY o), '{{}}'), COALESCE(array_agg(c ORDER BY o), '{{}}'),
               COALESCE(array_agg(nc ORDER BY o), '{{}}'), COALESCE(array_agg(s ORDER BY o), '{{}}'),
               COALESCE(array_agg(mn ORDER BY o), '{{}}'), COALESCE(array_agg(mx ORDER BY o), '{{}}')
        FROM unnest(d.meter_ids, d.event_counts, d.numeric_counts, d.numeric_sums, d.numeric_mins,
                    d.numeric_maxs) WITH ORDINALITY AS u(m, c, nc, s, mn, mx, o)
        WHERE m <> ALL(%(meters)s::uuid[])
    )
    WHERE d.meter_ids && %(meters)s::uuid[]""",
    f"DELETE FROM {DELTA_ROWS} WHERE cardinality(meter_ids) = 0",
]


def delete_meter_rollups(cursor, meter_id) -> None:
    """Every tier of one meter (the caller holds the organization's exclusive lock)."""
    for table in ALL_TABLES:
        if table == DELTA_TABLE:
            for sql in REMOVE_METER_FROM_DELTA_ROWS:
                cursor.execute(sql, {"meters": [meter_id]})
        else:
            cursor.execute(f"DELETE FROM {table} WHERE meter_id = %s", [meter_id])


# --- reading: partials of a meter over hour ranges, from every tier ---------------------------

DAY = timedelta(days=1)


def ceil_day(moment: datetime) -> datetime:
    floor = floor_day(moment)
    return floor if floor == moment else floor + DAY


def floor_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def split_hours(hour_start: datetime, hour_end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC days [ds, de) inside the whole hours [hour_start, hour_end): read from the
    daily tier, the rest from the hourly tier. With no whole day, ds = de = hour_end (then the
    hourly ranges [hour_start, ds) and [de, hour_end) cover everything)."""
    if hour_start >= hour_end:
        return hour_end, hour_end
    ds, de = ceil_day(hour_start), floor_day(hour_end)
    if ds >= de:
        return hour_end, hour_end
    return ds, de


WINDOW_PARTIALS_SQL = f"""
WITH w AS (
    SELECT * FROM unnest(%(keys)s::int[], %(customers)s::uuid[], %(hs)s::timestamptz[],
                         %(he)s::timestamptz[], %(ds)s::timestamptz[], %(de)s::timestamptz[])
         AS w(k, customer_id, hs, he, ds, de)
), parts AS (
    SELECT w.k, r.event_count, r.numeric_count, r.numeric_sum, r.numeric_min, r.numeric_max
    FROM w JOIN {DAY_TABLE} r ON r.meter_id = %(meter)s AND r.customer_id = w.customer_id
     AND r.bucket >= w.ds AND r.bucket < w.de
    UNION ALL
    SELECT w.k, r.event_count, r.numeric_count, r.numeric_sum, r.numeric_min, r.numeric_max
    FROM w JOIN {HOUR_TABLE} r ON r.meter_id = %(meter)s AND r.customer_id = w.customer_id
     AND r.bucket >= w.hs AND r.bucket < w.ds
    UNION ALL
    SELECT w.k, r.event_count, r.numeric_count, r.numeric_sum, r.numeric_min, r.numeric_max
    FROM w JOIN {HOUR_TABLE} r ON r.meter_id = %(meter)s AND r.customer_id = w.customer_id
     AND r.bucket >= w.de AND r.bucket < w.he
    UNION ALL
    SELECT w.k, r.event_count, r.numeric_count, r.numeric_sum, r.numeric_min, r.numeric_max
    FROM w JOIN {DELTA_TABLE} r ON r.meter_id = %(meter)s AND r.customer_id = w.customer_id
     AND r.bucket >= w.hs AND r.bucket < w.he
)
SELECT k, sum(event_count), sum(numeric_count), COALESCE(sum(numeric_sum), 0),
       min(numeric_min), max(numeric_max)
FROM parts GROUP BY k
"""


def window_partials(cursor, meter_id, windows: list[tuple]) -> dict:
    """The public read of rollups for other apps (billing): `windows` are (key, customer id,
    hour start, hour end) on whole UTC hours; returns key → (event_count, numeric_count,
    numeric_sum, numeric_min, numeric_max) over every tier, in one statement (consistent with
    a concurrent compaction). Keys without rollups are absent."""
    if not windows:
        return {}
    splits = [split_hours(hs, he) for _, _, hs, he in windows]
    cursor.execute(
        WINDOW_PARTIALS_SQL,
        {
            "keys": [w[0] for w in windows],
            "customers": [str(w[1]) for w in windows],
            "hs": [w[2] for w in windows],
            "he": [w[3] for w in windows],
            "ds": [s[0] for s in splits],
            "de": [s[1] for s in splits],
            "meter": meter_id,
        },
    )
    return {row[0]: tuple(row[1:]) for row in cursor.fetchall()}
