"""Hourly rollups per (meter, customer), maintained set-based inside the ingest transaction.

Concurrency (`metering.locks` has the whole discipline):

- Every writer of rollups holds the organization's rollup lock: ingestion and linking in shared
  mode, a backfill chunk in exclusive mode. A backfill chunk therefore sees every event whose
  transaction did not see its progress (`backfill_cursor`), and every later transaction sees the
  new cursor: each event is rolled up exactly once.
- Upserts run in a fixed key order (meter id, then customer id, then bucket), so concurrent
  ingests of the same customer wait for each other instead of deadlocking.
"""

import json
from dataclasses import dataclass

from metering import filters, locks

METERS_SQL = """
SELECT id, filter, aggregation, state, backfill_cursor, definition_version
FROM metering_meter WHERE organization_id = %s ORDER BY id
"""


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


_STATEMENTS: dict[tuple, tuple[str, list]] = {}


def _rollup_statement(meter: MeterDefinition) -> tuple[str, list]:
    """The upsert for one meter, parameterized by %(source)s (the events to add)."""
    key = (meter.id, meter.version)
    cached = _STATEMENTS.get(key)
    if cached is not None:
        return cached
    filter_sql, filter_params = filters.compile_filter(meter.filter)
    func = meter.aggregation.get("func")
    prop = meter.aggregation.get("property")
    if func in filters.PROPERTY_FUNCS:
        num_sql, num_params = filters.numeric_sql(prop)
    else:
        num_sql, num_params = "NULL::numeric", []
    unique = func == "unique"
    if unique:
        key_sql, key_params = filters.value_key_sql(prop)
    else:
        key_sql, key_params = "NULL::text", []
    sql = f"""
WITH ev AS MATERIALIZED (
    SELECT e.customer_id, date_trunc('hour', e.timestamp, 'UTC') AS bucket,
           {num_sql} AS num, {key_sql} AS vk
    FROM metering_event e
    WHERE __SOURCE__ AND e.customer_id IS NOT NULL AND e.source = 'user' AND __CURSOR__
      AND {filter_sql}
), agg AS (
    SELECT customer_id, bucket, count(*) AS c, count(num) AS nc, COALESCE(sum(num), 0) AS s,
           min(num) AS mn, max(num) AS mx
    FROM ev GROUP BY customer_id, bucket
), up AS (
    INSERT INTO metering_meterrollup AS r (meter_id, customer_id, bucket, event_count,
        numeric_count, numeric_sum, numeric_min, numeric_max)
    SELECT %(meter)s, customer_id, bucket, c, nc, s, mn, mx FROM agg ORDER BY customer_id, bucket
    ON CONFLICT (meter_id, customer_id, bucket) DO UPDATE SET
        event_count = r.event_count + EXCLUDED.event_count,
        numeric_count = r.numeric_count + EXCLUDED.numeric_count,
        numeric_sum = r.numeric_sum + EXCLUDED.numeric_sum,
        numeric_min = LEAST(r.numeric_min, EXCLUDED.numeric_min),
        numeric_max = GREATEST(r.numeric_max, EXCLUDED.numeric_max)
    RETURNING 1
){
        ""
        if not unique
        else ''', uq AS (
    INSERT INTO metering_meteruniquerollup (meter_id, customer_id, bucket, value_key)
    SELECT DISTINCT %(meter)s::uuid, customer_id, bucket, vk FROM ev WHERE vk IS NOT NULL
    ORDER BY 2, 3, 4
    ON CONFLICT DO NOTHING
    RETURNING 1
)'''
    }, cm AS (
    INSERT INTO metering_customermeter AS m (id, customer_id, meter_id, created_at, modified_at)
    SELECT gen_random_uuid(), customer_id, %(meter)s, now(), now()
    FROM (SELECT DISTINCT customer_id FROM agg) x ORDER BY customer_id
    -- DO NOTHING, not a modified_at bump: rewriting the row would lock every customer meter a
    -- batch touches until commit and serialize concurrent ingests of the same customers
    ON CONFLICT (customer_id, meter_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM ev)
"""
    # Positional params of the expressions come first in the text: num, vk, filter.
    statement = (sql, [*num_params, *key_params, *filter_params])
    _STATEMENTS[key] = statement
    return statement


def _to_named(sql: str, positional: list) -> tuple[str, dict]:
    """Turn the compiled expressions' %s into named params so they mix with %(meter)s."""
    params = {}
    parts = sql.split("%s")
    out = [parts[0]]
    for index, part in enumerate(parts[1:]):
        name = f"p{index}"
        params[name] = positional[index]
        out.append(f"%({name})s{part}")
    return "".join(out), params


def apply(
    cursor,
    meters: list[MeterDefinition],
    *,
    source_sql: str,
    source_params: dict,
    ignore_cursor: bool = False,
) -> int:
    """Add the events selected by `source_sql` (over alias `e`) to each meter's rollups.
    Backfilling meters only take customers at or below their cursor (the rest is the backfill's
    job) unless `ignore_cursor`. Returns the number of (meter, event) matches."""
    matched = 0
    for meter in meters:
        if not meter.filter or not meter.aggregation:
            continue
        params = dict(source_params)
        if meter.state == "ready" or ignore_cursor:
            cursor_sql = "TRUE"
        elif meter.backfill_cursor is None:
            continue
        else:
            cursor_sql = "e.customer_id <= %(backfill_cursor)s"
            params["backfill_cursor"] = meter.backfill_cursor
        template, positional = _rollup_statement(meter)
        named_sql, named = _to_named(template, positional)
        params.update(named)
        params["meter"] = meter.id
        cursor.execute(
            named_sql.replace("__SOURCE__", source_sql).replace("__CURSOR__", cursor_sql), params
        )
        matched += cursor.fetchone()[0]
    return matched


def after_insert(cursor, *, organization_id, event_ids: list) -> None:
    locks.lock_organization(cursor, organization_id)
    meters = organization_meters(cursor, organization_id)
    if meters:
        apply(cursor, meters, source_sql="e.id = ANY(%(ids)b)", source_params={"ids": event_ids})
