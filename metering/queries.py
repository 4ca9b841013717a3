"""Metering's query API: what the apps above read of usage, and the only place they read it (no
SQL over the events table outside `metering`). Every read names windows — a meter, a customer,
time ranges — never a table, so a second event store can stand behind the same functions.

- `consistent_read()` opens a **committed read boundary**: every read inside it sees exactly the
  ingests that had committed when it began, and the boundary names that set. A later read can
  then ask for the events that *arrived after* it (an ingest, or the linking of a customer,
  that the boundary did not see) — which is how billing puts each event into exactly one
  period's set however ingests and closes interleave. PostgreSQL: a REPEATABLE READ snapshot
  (`pg_current_snapshot()`), compared with each event's `arrival_txid`.
- `window_values(windows)`: a meter's value over each window (several time ranges of one
  customer), count/sum set-based for many windows at once, avg/min/max/unique window by window,
  optionally joined by the late arrivals of earlier ranges (`Arrivals`).
- `credited_in_windows(windows)`: credits granted inside each window.
- `window_events(window)`: the raw matching events of a window (audits, tests).
- `bucket_values(...)`: a customer's value per bucket (charts); `daily_values(...)`: every meter's
  value per UTC day (dashboards).
"""

import json
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction

from metering import aggregation, customer_meters, filters, stores
from metering.models import EventCorrection, Meter, MeterState
from metering.stores.base import (
    Arrivals,
    Range,
    ReadBoundary,
    Window,
    WindowEvent,
    WindowValue,
)

__all__ = ["Arrivals", "Range", "ReadBoundary", "Window", "WindowEvent", "WindowValue"]

ADDITIVE = ("count", "sum")
HOUR = timedelta(hours=1)


# --- read boundaries ------------------------------------------------------------------------


SNAPSHOT_SQL = "SELECT pg_current_snapshot()::text, pg_current_xact_id_if_assigned()::text, now()"


_boundary_of_read: ContextVar = ContextVar("metering_read_boundary", default=None)


def current_boundary() -> ReadBoundary | None:
    """The boundary of the consistent read this code runs in (None outside one)."""
    return _boundary_of_read.get()


@contextmanager
def consistent_read():
    """Yields the boundary of the reads made inside the block.

    Outside a transaction (every production caller: cycle closes, revocations, plan changes)
    this is a REPEATABLE READ transaction: all reads share one snapshot, and the boundary is that
    snapshot. Inside a caller's transaction (tests) the reads keep that transaction's isolation;
    the boundary is then taken when the block starts and counts the transaction's own writes as
    seen. The event store may narrow it (ClickHouse: to the batches it has received)."""
    store = stores.current()
    if connection.in_atomic_block:
        # a savepoint: a failed read leaves the caller's work intact
        with (
            transaction.atomic(),
            store.reading(_boundary()) as boundary,
            _reading(boundary),
        ):
            yield boundary
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with store.reading(_boundary()) as boundary, _reading(boundary):
            yield boundary


@contextmanager
def _reading(boundary: ReadBoundary):
    token = _boundary_of_read.set(boundary)
    try:
        yield
    finally:
        _boundary_of_read.reset(token)


def _boundary() -> ReadBoundary:
    with connection.cursor() as cursor:
        cursor.execute(SNAPSHOT_SQL)
        snapshot, own, taken_at = cursor.fetchone()
    return ReadBoundary(_seeing_own_writes(snapshot, own), taken_at)


def _seeing_own_writes(snapshot: str, own: str | None) -> str:
    """A snapshot never lists its own transaction as running, but the transaction's id may lie
    at or past the snapshot's xmax (then it would read as not yet started): extend xmax past it,
    keeping every id in between as running (they had not committed when the snapshot was
    taken)."""
    if own is None:
        return snapshot
    xmin, xmax, running = snapshot.split(":")
    own_id, xmax_id = int(own), int(xmax)
    if own_id < xmax_id:
        return snapshot
    ids = sorted({int(x) for x in running.split(",") if x} | set(range(xmax_id, own_id)))
    return f"{xmin}:{own_id + 1}:{','.join(map(str, ids))}"


# --- windows ----------------------------------------------------------------------------------


def window_values(windows: list[Window]) -> dict:
    """key → WindowValue. A store that reads every meter at once (ClickHouse: one statement for
    a close's windows) answers them together; otherwise count/sum set-based for all windows of a
    meter, the others with their late arrivals."""
    result = {window.key: WindowValue(Decimal(0)) for window in windows}
    by_meter: dict = defaultdict(list)
    for window in windows:
        by_meter[window.meter.pk].append(window)
    store = stores.current()
    groups = list(by_meter.values())
    if store.reads_meters_together:
        # count/sum windows carry no late arrivals (billing adds usage up by period instead)
        for group, (own, late) in zip(groups, store.meters_partials(groups), strict=True):
            _set_values(result, group, own, late)
        return result
    for group in groups:
        meter = group[0].meter
        if meter.aggregation.get("func") in ADDITIVE:
            for index, value in store.additive_values(meter, group).items():
                result[group[index].key] = WindowValue(value)
            continue
        _set_values(
            result, group, store.window_partials(meter, group), store.late_partials(meter, group)
        )
    return result


def _set_values(result: dict, group: list[Window], own: dict, late: dict) -> None:
    func = group[0].meter.aggregation["func"]
    for index, window in enumerate(group):
        mine = own.get(index, aggregation.Partial())
        if index not in late:
            result[window.key] = WindowValue(aggregation.final_value(func, mine))
            continue
        joined = _joined(mine, late[index])
        result[window.key] = WindowValue(
            aggregation.final_value(func, joined), late[index].event_count
        )


def _joined(own: aggregation.Partial, late: aggregation.Partial) -> aggregation.Partial:
    def pick(chooser, a, b):
        present = [v for v in (a, b) if v is not None]
        return chooser(present) if present else None

    return aggregation.Partial(
        event_count=own.event_count + late.event_count,
        numeric_count=own.numeric_count + late.numeric_count,
        numeric_sum=aggregation.exact_sum([Decimal(own.numeric_sum or 0), late.numeric_sum]),
        numeric_min=pick(min, own.numeric_min, late.numeric_min),
        numeric_max=pick(max, own.numeric_max, late.numeric_max),
        distinct=own.distinct + late.distinct,
    )


# --- usage corrections -----------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectedEvent:
    """A usage correction as billing needs it (metering.corrections): the corrected event's
    timestamp and arrival, what it was and what replaces it (None: canceled), and `txid`, the
    correcting transaction — a read boundary that sees it sees the corrected usage."""

    customer_id: object
    txid: int
    timestamp: datetime
    arrival_txid: int | None
    original: dict  # an event as the filters read it: name, source, timestamp, metadata
    replacement: dict | None

    def contribution(self, meter, event: dict | None) -> Decimal:
        """What `event` adds to a count/sum meter's value."""
        if event is None:
            return Decimal(0)
        partial = aggregation.python_partial(meter.filter, meter.aggregation, [event])
        return aggregation.final_value(meter.aggregation["func"], partial)

    def touches(self, meter) -> bool:
        return any(
            event is not None and filters.evaluate(meter.filter, event)
            for event in (self.original, self.replacement)
        )


def corrections_since(customer_ids: list, since: datetime) -> list[CorrectedEvent]:
    """The usage corrections of these customers made at or after `since` (oldest first)."""
    found = EventCorrection.objects.filter(
        customer_id__in=customer_ids, created_at__gte=since
    ).order_by("created_at", "id")
    return [
        CorrectedEvent(
            customer_id=c.customer_id,
            txid=c.txid,
            timestamp=c.event_timestamp,
            arrival_txid=c.event_arrival_txid,
            original=_as_event(c.original, c.event_timestamp),
            replacement=_as_event(c.replacement, c.event_timestamp) if c.replacement else None,
        )
        for c in found
    ]


def _as_event(stored: dict, timestamp: datetime) -> dict:
    return {
        "name": stored["name"],
        "source": "user",
        "timestamp": timestamp,
        "metadata": stored.get("metadata") or {},
    }


def set_value(meter, events: list[WindowEvent]) -> Decimal:
    """A meter's value over a set of raw events (`window_events` reads)."""
    partial = aggregation.Partial()
    for event in events:
        partial.event_count += 1
        if event.number is not None:
            partial.numeric_count += 1
            partial.numeric_sum = aggregation.EXACT.add(partial.numeric_sum, event.number)
            low, high = partial.numeric_min, partial.numeric_max
            partial.numeric_min = event.number if low is None else min(low, event.number)
            partial.numeric_max = event.number if high is None else max(high, event.number)
        if event.value_key is not None:
            partial.keys.add(event.value_key)
    partial.distinct = len(partial.keys)
    return aggregation.final_value(meter.aggregation["func"], partial)


# --- credits ------------------------------------------------------------------------------------

# Credits are system events: PostgreSQL holds them with either event store.
CREDITS_SQL = """
SELECT w.k, (e.metadata -> 'units')
FROM unnest(%s::int[], %s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[])
     AS w(k, customer_id, meter_id, ws, we)
JOIN metering_event e
  ON e.customer_id = w.customer_id AND e.source = 'system' AND e.name = %s
 AND e.timestamp >= w.ws AND e.timestamp < w.we AND e.metadata ->> 'meter_id' = w.meter_id
ORDER BY w.k, e.timestamp, e.ingested_at, e.id
"""


def credited_in_windows(windows: list[Window]) -> dict:
    """key → credits granted in the window (its first range's start to its last range's end),
    summed in timestamp order and clamped at 0 after each step (the customer-meter rule). One
    statement for all windows."""
    result = {window.key: 0 for window in windows}
    rows = [
        (index, window, window.ranges[0][0], window.ranges[-1][1])
        for index, window in enumerate(windows)
        if window.ranges and window.ranges[0][0] < window.ranges[-1][1]
    ]
    if not rows:
        return result
    with connection.cursor() as cursor:
        cursor.execute(
            CREDITS_SQL,
            [
                [index for index, *_ in rows],
                [str(window.customer_id) for _, window, *_ in rows],
                [str(window.meter.pk) for _, window, *_ in rows],
                [start for *_, start, _ in rows],
                [end for *_, end in rows],
                customer_meters.CREDITED,
            ],
        )
        for index, units in cursor.fetchall():
            units = json.loads(units) if isinstance(units, str | bytes) else units
            if isinstance(units, bool) or not isinstance(units, int | float):
                continue
            key = windows[index].key
            result[key] = max(0, result[key] + int(units))
    return result


# --- raw events ---------------------------------------------------------------------------------


def window_events(window: Window, *, seen_by: ReadBoundary | None = None) -> list[WindowEvent]:
    """The events matching the meter in the window's ranges (not its late arrivals), optionally
    only those a boundary saw. For audits and tests: it reads raw events."""
    return stores.current().window_events(window, seen_by)


def bucket_values(meter: Meter, *, customer_id, buckets: list[Range]) -> list[Decimal]:
    """The meter's value for one customer in each of consecutive buckets (charts)."""
    parts, _total = aggregation.compute(
        meter,
        buckets=buckets,
        customer_ids=[customer_id],
        use_rollups=meter.state == MeterState.READY,
    )
    func = meter.aggregation["func"]
    return [aggregation.final_value(func, part) for part in parts]


def daily_values(*, organization_id, since: datetime, until: datetime):
    """Each live meter's value per UTC day (dashboards)."""
    return stores.current().daily_values(organization_id=organization_id, since=since, until=until)


# --- ad-hoc sums (reports) ----------------------------------------------------------------------


def _adhoc_meter(organization_id, event_filter: dict, aggregation_: dict) -> Meter:
    # never saved: it has no rollups, so every read of it goes to raw events (BACKFILLING)
    return Meter(
        organization_id=organization_id,
        name="ad hoc",
        filter=event_filter,
        aggregation=aggregation_,
        state=MeterState.BACKFILLING,
    )


def customer_sums(
    *,
    organization_id,
    event_filter: dict,
    prop: str,
    start: datetime,
    end: datetime,
    customer_ids: list | None = None,
) -> dict:
    """customer id → (matching events, sum of `prop` over those where it is a JSON number) for
    the events of each customer (of all, or of `customer_ids`) matching `event_filter` with
    timestamps in [start, end): a `sum` meter nobody stored (reports, e.g. billing's margins over
    `_cost.amount`). Raw events, one statement for all customers; unlinked events are left out."""
    meter = _adhoc_meter(organization_id, event_filter, {"func": "sum", "property": prop})
    _, totals = aggregation.compute(
        meter,
        buckets=[(start, end)],
        customer_ids=customer_ids,
        use_rollups=False,
        per_customer=True,
    )
    return {
        customer_id: (partial.event_count, Decimal(partial.numeric_sum or 0))
        for customer_id, partial in totals.items()
    }


def string_values(
    *, organization_id, customer_id, event_filter: dict, prop: str, start: datetime, end: datetime
) -> set[str]:
    """The distinct string values of `prop` among one customer's events matching `event_filter`
    in [start, end). Reads every matching event: for small sets (a report's rare cases)."""
    meter = _adhoc_meter(organization_id, event_filter, {"func": "unique", "property": prop})
    window = Window(key=None, meter=meter, customer_id=customer_id, ranges=((start, end),))
    return {
        event.value_key[2:]
        for event in window_events(window)
        if event.value_key and event.value_key.startswith("s:")
    }
