"""The six aggregations over partial aggregates, and the read path that produces partials from
rollups (whole hours) completed by raw events (the edges), or from raw events only.

A *partial* is (event_count, numeric_count, numeric_sum, numeric_min, numeric_max[, distinct]).
Final values are computed in Python with `Decimal`, so the rollup path and the raw path share the
arithmetic: empty → 0; avg = sum ÷ number of numeric events.
"""

import decimal
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection

from core.metadata import NUMBER_LIMIT_DIGITS, NUMBER_MAX_PLACES, metadata_value_candidates
from metering import filters, rollups, stores

FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
# avg is the one inexact step: 40 significant digits, on every read path.
DECIMAL_CONTEXT = decimal.Context(prec=40)
# Sums and differences are exact: accepted numbers are below 10^40 with at most 20 decimal places,
# so a sum of up to 10^40 of them fits in these digits (Python's default context rounds at 28).
EXACT = decimal.Context(
    prec=2 * (NUMBER_LIMIT_DIGITS + NUMBER_MAX_PLACES), Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN
)


@dataclass
class Partial:
    event_count: int = 0
    numeric_count: int = 0
    numeric_sum: decimal.Decimal = decimal.Decimal(0)
    numeric_min: decimal.Decimal | None = None
    numeric_max: decimal.Decimal | None = None
    distinct: int = 0
    keys: set = field(default_factory=set)  # only used by the Python evaluator


def final_value(func: str, partial: Partial | None) -> decimal.Decimal:
    if partial is None:
        return decimal.Decimal(0)
    if func == "count":
        return decimal.Decimal(partial.event_count)
    if func == "sum":
        return decimal.Decimal(partial.numeric_sum or 0)
    if func == "avg":
        if not partial.numeric_count:
            return decimal.Decimal(0)
        return DECIMAL_CONTEXT.divide(
            decimal.Decimal(partial.numeric_sum), decimal.Decimal(partial.numeric_count)
        )
    if func == "min":
        return partial.numeric_min if partial.numeric_min is not None else decimal.Decimal(0)
    if func == "max":
        return partial.numeric_max if partial.numeric_max is not None else decimal.Decimal(0)
    if func == "unique":
        return decimal.Decimal(partial.distinct)
    raise ValueError(func)


def exact_sum(values) -> decimal.Decimal:
    total = decimal.Decimal(0)
    for value in values:
        total = EXACT.add(total, value)
    return total


def combine(func: str, values: list[decimal.Decimal]) -> decimal.Decimal:
    """customer_aggregation_function: combine per-customer meter values."""
    if not values:
        return decimal.Decimal(0)
    if func == "count":
        return decimal.Decimal(len(values))
    if func == "sum":
        return exact_sum(values)
    if func == "avg":
        return DECIMAL_CONTEXT.divide(exact_sum(values), decimal.Decimal(len(values)))
    if func == "min":
        return min(values)
    if func == "max":
        return max(values)
    if func == "unique":
        return decimal.Decimal(len(set(values)))
    raise ValueError(func)


# --- Python evaluator (the reference the SQL paths are tested against) -----------------------


def python_partial(meter_filter: dict, aggregation: dict, events) -> Partial:
    partial = Partial()
    func, prop = aggregation["func"], aggregation.get("property")
    for event in events:
        if not filters.evaluate(meter_filter, event):
            continue
        partial.event_count += 1
        if func in filters.PROPERTY_FUNCS:
            number = filters.numeric_value(prop, event)
            if number is not None:
                partial.numeric_count += 1
                partial.numeric_sum = EXACT.add(partial.numeric_sum, number)
                partial.numeric_min = (
                    number if partial.numeric_min is None else min(partial.numeric_min, number)
                )
                partial.numeric_max = (
                    number if partial.numeric_max is None else max(partial.numeric_max, number)
                )
        elif func == "unique":
            key = filters.value_key(prop, event)
            if key is not None:
                partial.keys.add(key)
    partial.distinct = len(partial.keys)
    return partial


# --- SQL read path --------------------------------------------------------------------------


def _ceil_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass
class Plan:
    starts: list
    ends: list
    hour_starts: list
    hour_ends: list
    raw_starts: list
    raw_ends: list


def plan(buckets: list[tuple[datetime, datetime]], *, use_rollups: bool) -> Plan:
    """Whole UTC hours inside each bucket come from rollups; the rest (edges that don't align,
    e.g. Asia/Kolkata midnights or a reset at 10:17) from raw events."""
    result = Plan([], [], [], [], [], [])
    for start, end in buckets:
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        result.starts.append(start)
        result.ends.append(end)
        hour_start, hour_end = _ceil_hour(start), _floor_hour(end) if end < FAR_FUTURE else end
        if not use_rollups or hour_start >= hour_end:
            hour_start = hour_end = start
            raw = [(start, end)]
        else:
            raw = [(start, hour_start), (hour_end, end)]
        result.hour_starts.append(hour_start)
        result.hour_ends.append(hour_end)
        for raw_start, raw_end in raw:
            if raw_start >= raw_end:
                continue
            if result.raw_ends and result.raw_ends[-1] == raw_start:
                result.raw_ends[-1] = raw_end
            else:
                result.raw_starts.append(raw_start)
                result.raw_ends.append(raw_end)
    return result


def _merge(ranges: list[tuple[datetime, datetime]]) -> tuple[list, list]:
    """Non-empty ranges, adjacent ones merged (they come in time order)."""
    starts: list = []
    ends: list = []
    for start, end in ranges:
        if start >= end:
            continue
        if ends and ends[-1] == start:
            ends[-1] = end
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


def rollup_ranges(the_plan: Plan) -> tuple[tuple[list, list], ...]:
    """(daily, hourly, delta) ranges covering the plan's whole hours: whole UTC days from the
    daily tier, the remaining hours from the hourly tier, and every whole hour from the pending
    deltas (which compaction hasn't folded into either yet)."""
    days, hours, deltas = [], [], []
    for hs, he in zip(the_plan.hour_starts, the_plan.hour_ends, strict=True):
        ds, de = rollups.split_hours(hs, he)
        days.append((ds, de))
        hours += [(hs, ds), (de, he)]
        deltas.append((hs, he))
    return _merge(days), _merge(hours), _merge(deltas)


def metadata_sql(metadata: dict[str, list] | None) -> tuple[str, list]:
    """`metadata[key]=value` query filters (values of a key OR-ed, keys AND-ed), like the
    event list: a value matches the string, and also `true`/`false` and integers."""
    if not metadata:
        return "TRUE", []
    parts, params = [], []
    for key, raw_values in metadata.items():
        alternatives = []
        for raw in raw_values:
            for candidate in metadata_value_candidates(raw):
                alternatives.append("e.metadata @> %s::jsonb")
                params.append(json.dumps({key: candidate}))
        parts.append("(" + " OR ".join(alternatives or ["FALSE"]) + ")")
    return "(" + " AND ".join(parts) + ")", params


def _number(value):
    return decimal.Decimal(value) if value is not None else None


def compute(
    meter,
    *,
    buckets: list[tuple[datetime, datetime]],
    customer_ids: list | None = None,
    use_rollups: bool = True,
    metadata: dict | None = None,
    per_customer: bool = False,
) -> tuple[list, object]:
    """Partials per bucket and for the whole range, from the configured event store. With
    `per_customer`, each is a dict {customer_id: Partial} (customers with at least one matching
    event)."""
    return stores.current().compute(
        meter,
        buckets=buckets,
        customer_ids=customer_ids,
        use_rollups=use_rollups,
        metadata=metadata,
        per_customer=per_customer,
    )


def postgres_compute(
    meter,
    *,
    buckets: list[tuple[datetime, datetime]],
    customer_ids: list | None = None,
    use_rollups: bool = True,
    metadata: dict | None = None,
    per_customer: bool = False,
) -> tuple[list, object]:
    """`compute` on the PostgreSQL store: rollups for whole hours, raw events for the rest."""
    if metadata:
        use_rollups = False  # rollups don't keep metadata: filtered reads use raw events
    the_plan = plan(buckets, use_rollups=use_rollups)
    func = meter.aggregation["func"]
    prop = meter.aggregation.get("property")
    filter_sql, filter_params = filters.compile_filter(meter.filter)
    meta_sql, meta_params = metadata_sql(metadata)
    customer_sql = "TRUE" if customer_ids is None else "{alias}.customer_id = ANY(%s::uuid[])"
    # distinct: the raw part joins each customer once
    customer_params = [] if customer_ids is None else [list(dict.fromkeys(map(str, customer_ids)))]
    windows_sql = "unnest(%s::timestamptz[], %s::timestamptz[]) AS w(ws, we)"
    windows_params = [the_plan.raw_starts, the_plan.raw_ends]
    group = (
        "GROUPING SETS ((idx, customer_id), (customer_id))"
        if per_customer
        else ("GROUPING SETS ((idx), ())")
    )
    select_customer = "customer_id" if per_customer else "NULL::uuid"

    tiers = rollup_ranges(the_plan) if use_rollups else None

    def rollup_part(tables: tuple[str, str, str], columns: str) -> tuple[str, list]:
        """Whole days from the daily tier, the other whole hours from the hourly tier, and the
        pending deltas of every whole hour: one range scan per (merged) range, all in this one
        statement so that a concurrent compaction is seen entirely or not at all."""
        if not use_rollups:
            return "", []
        sql, params = [], []
        for table, (starts, ends) in zip(tables, tiers, strict=True):
            if not starts:
                continue
            sql.append(
                f"SELECT width_bucket(r.bucket, %s::timestamptz[]), r.customer_id, {columns} "
                "FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS w(ws, we) "
                f"CROSS JOIN LATERAL (SELECT * FROM {table} r0 "
                "WHERE r0.meter_id = %s AND r0.bucket >= w.ws AND r0.bucket < w.we AND "
                + customer_sql.format(alias="r0")
                + " OFFSET 0) r UNION ALL "
            )
            params += [the_plan.starts, starts, ends, meter.id, *customer_params]
        return "".join(sql), params

    def raw_part(expr: str, expr_params: list, columns: str, width: int) -> tuple[str, list]:
        """Events inside the raw windows only: each window drives an index range scan."""
        if not the_plan.raw_starts:
            empty = ", ".join(["NULL"] * width)
            return f"SELECT NULL::bigint, NULL::uuid, {empty} WHERE FALSE", []
        if customer_ids is None:
            per_customer_sql, source_params, customer_cond = "", [], "e.customer_id IS NOT NULL"
        else:
            # one range scan of `event_customer_ts` per (window, customer): only the customer's
            # events, whatever the rest of the installation ingests in that window
            per_customer_sql = "CROSS JOIN unnest(%s::uuid[]) AS c(id) "
            source_params, customer_cond = customer_params, "e.customer_id = c.id"
        sql = (
            f"SELECT width_bucket(x.ts, %s::timestamptz[]) AS idx, x.customer_id, {columns} "
            f"FROM {windows_sql} {per_customer_sql}CROSS JOIN LATERAL ("
            f"SELECT e.timestamp AS ts, e.customer_id, {expr} AS val FROM metering_event e "
            f"WHERE {customer_cond} AND e.timestamp >= w.ws AND e.timestamp < w.we "
            "AND e.organization_id = %s AND e.source = 'user' "
            f"AND {filter_sql} AND {meta_sql} OFFSET 0) x"
        )
        return sql, [
            the_plan.starts,
            *windows_params,
            *source_params,
            *expr_params,
            meter.organization_id,
            *filter_params,
            *meta_params,
        ]

    if func in filters.PROPERTY_FUNCS:
        num_sql, num_params = filters.numeric_sql(prop)
    else:
        num_sql, num_params = "NULL::numeric", []
    r_sql, r_params = rollup_part(
        (rollups.DAY_TABLE, rollups.HOUR_TABLE, rollups.DELTA_TABLE),
        "r.event_count, r.numeric_count, r.numeric_sum, r.numeric_min, r.numeric_max",
    )
    e_sql, e_params = raw_part(
        num_sql,
        num_params,
        "1, (x.val IS NOT NULL)::int, COALESCE(x.val, 0), x.val, x.val",
        5,
    )
    sql = (
        f"WITH parts(idx, customer_id, ec, nc, ns, mn, mx) AS ({r_sql}{e_sql}) "
        f"SELECT GROUPING(idx) = 1 AS is_total, idx, {select_customer}, sum(ec), sum(nc), "
        f"sum(ns), min(mn), max(mx) FROM parts GROUP BY {group}"
    )
    rows = _fetch(sql, [*r_params, *e_params])
    distinct_rows = []
    if func == "unique":
        key_sql, key_params = filters.value_key_sql(prop)
        ur_sql, ur_params = rollup_part(
            (rollups.UNIQUE_DAY_TABLE, rollups.UNIQUE_HOUR_TABLE, rollups.UNIQUE_DELTA_TABLE),
            "r.value_key",
        )
        ue_sql, ue_params = raw_part(key_sql, key_params, "x.val", 1)
        if the_plan.raw_starts:
            ue_sql += " WHERE x.val IS NOT NULL"
        sql = (
            f"WITH parts(idx, customer_id, vk) AS ({ur_sql}{ue_sql}) "
            f"SELECT GROUPING(idx) = 1, idx, {select_customer}, count(DISTINCT vk) "
            f"FROM parts GROUP BY {group}"
        )
        distinct_rows = _fetch(sql, [*ur_params, *ue_params])
    return _assemble(len(buckets), rows, distinct_rows, per_customer)


def _fetch(sql: str, params: list) -> list:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _assemble(count: int, rows, distinct_rows, per_customer: bool):
    def empty():
        return {} if per_customer else Partial()

    buckets = [empty() for _ in range(count)]
    total = empty()

    def slot(is_total, idx, customer_id):
        target = total if is_total else buckets[idx - 1]
        if not per_customer:
            return target
        return target.setdefault(customer_id, Partial())

    for is_total, idx, customer_id, ec, nc, ns, mn, mx in rows:
        partial = slot(is_total, idx, customer_id)
        partial.event_count = int(ec or 0)
        partial.numeric_count = int(nc or 0)
        partial.numeric_sum = _number(ns) or decimal.Decimal(0)
        partial.numeric_min = _number(mn)
        partial.numeric_max = _number(mx)
    for is_total, idx, customer_id, distinct in distinct_rows:
        if per_customer:
            target = total if is_total else buckets[idx - 1]
            if customer_id not in target:
                continue
        slot(is_total, idx, customer_id).distinct = int(distinct)
    return buckets, total
