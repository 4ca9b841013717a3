"""The event store interface: what metering asks of the place user events live (docs/scaling.md).

PostgreSQL keeps everything else in both modes — organizations, customers and the external id →
customer mapping, meters, customer meters, the idempotency keys, and the system events (credits
and resets: written by Meterline inside billing's transactions, so they must commit with them).
A store holds the **user** events and answers the aggregate reads over them; `metering.queries`
and `metering.aggregation.compute` put every read of the product through it.

The shapes a read names (windows, boundaries) are defined here so that both stores and the query
API share them without importing each other.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

Range = tuple[datetime, datetime]
# count, numeric count, sum (None when no number), min, max, distinct values: one group's figures
Figures = tuple[int, int, Decimal | None, Decimal | None, Decimal | None, int]


class ReadTimedOut(Exception):
    """A bounded read (the meter editor's preview) ran past its time limit."""


@dataclass(frozen=True)
class ReadBoundary:
    """What a read saw: a committed snapshot (`token`, opaque to callers: store it as text) and
    the time it was taken."""

    token: str
    taken_at: datetime

    def sees(self, txid: int | None) -> bool:
        """Had the transaction `txid` committed when this boundary was taken? (Rows written
        before transaction ids were recorded — None — count as seen.)"""
        return txid is None or not self.token or visible(txid, self.token)


def snapshot_ids(token: str) -> tuple[int, int, list[int]]:
    """A PostgreSQL snapshot's text (`xmin:xmax:running,…`) as numbers."""
    xmin, xmax, running = token.split(":")
    return int(xmin), int(xmax), [int(x) for x in running.split(",") if x]


def visible(txid: int, token: str) -> bool:
    """`pg_visible_in_snapshot` in Python: did the transaction commit before the snapshot?"""
    xmin, xmax, running = snapshot_ids(token)
    return txid < xmin or (txid < xmax and txid not in running)


@dataclass(frozen=True)
class Arrivals:
    """Events with timestamps in `ranges` that arrived after the boundary `since`."""

    ranges: tuple[Range, ...]
    since: ReadBoundary


@dataclass(frozen=True)
class Window:
    """Usage of `meter` by `customer_id` with event timestamps in any of `ranges` (sorted,
    disjoint, each [start, end)). `late` (avg/min/max/unique) adds earlier events that arrived
    after a boundary: they join the window's set."""

    key: object
    meter: object
    customer_id: object
    ranges: tuple[Range, ...]
    late: Arrivals | None = None


@dataclass(frozen=True)
class WindowValue:
    value: Decimal
    late_events: int = 0  # how many late arrivals joined the window's set


@dataclass(frozen=True)
class WindowEvent:
    id: object
    timestamp: datetime
    number: Decimal | None  # the aggregated property as a number (sum/avg/min/max)
    value_key: str | None  # the aggregated property's identity (unique)
    arrival_txid: int | None


@dataclass(frozen=True)
class StoredEvent:
    """An event as the store holds it: what a usage correction needs of it."""

    id: object
    name: str
    source: str
    timestamp: datetime
    customer_id: object
    external_customer_id: str | None
    external_id: str | None
    parent_id: object
    parent_reference: str | None
    arrival_txid: int | None
    metadata: dict  # numbers exact (Decimal)


@dataclass
class PreviewFigures:
    """A filter and aggregation over an organization's user events in a time range: every
    matching event, per customer (None: not linked to one) and per UTC day."""

    total: Figures | None = None
    customers: dict = field(default_factory=dict)  # customer id | None → Figures
    days: dict[date, Figures] = field(default_factory=dict)


def utc_ranges(ranges) -> list[Range]:
    return [(lo.astimezone(UTC), hi.astimezone(UTC)) for lo, hi in ranges if lo < hi]


class EventStore:
    """One implementation per `EVENT_STORE`. Writes run inside the caller's ingest transaction;
    reads see every batch whose ingest has returned (read-your-writes), and inside
    `metering.queries.consistent_read()` exactly the batches of the boundary."""

    name: str = ""
    # PostgreSQL keeps per-meter rollups maintained at ingest; a column store aggregates events
    rollups: bool = False
    # False: PostgreSQL's `metering_event` holds only the system events, and event lists merge
    # them with the store's `list_events` (metering.event_lists)
    user_events_in_postgres: bool = True
    # answers `meters_partials` (every meter's windows at once) instead of meter by meter
    reads_meters_together: bool = False

    # --- writes -------------------------------------------------------------------------------
    def write(self, *, organization, rows: list) -> list:
        """Store validated, de-duplicated rows in the current transaction; returns the ids of
        the events inserted (an `external_id` already stored is skipped)."""
        raise NotImplementedError

    def link(self, *, customer) -> int:
        """A customer received an external id: the events sent earlier with it become its
        usage, in the caller's transaction. Returns how many."""
        raise NotImplementedError

    def find_events(self, organization_id, *, ids: list, external_ids: list) -> list:
        """The organization's events (user, canceled and — PostgreSQL — system) with these ids
        or external ids, as StoredEvent."""
        raise NotImplementedError

    def correct(self, *, organization, corrections: list) -> list:
        """Apply validated usage corrections (`metering.corrections.Correction`) in the
        caller's transaction: mark each event `canceled`, insert each replacement with the
        original's arrival, and bring whatever the store derives from events up to date.
        Returns the replacement ids in order (None for a cancellation). Raises
        InvalidCorrection when an event is no longer a user event (corrected meanwhile)."""
        raise NotImplementedError

    # --- boundaries ---------------------------------------------------------------------------
    @contextmanager
    def reading(self, snapshot: ReadBoundary):
        """The boundary of a consistent read given its PostgreSQL snapshot, for the reads made
        inside the block. PostgreSQL's own snapshot is the boundary; a store whose batches reach
        it after their commit narrows it to the batches that did."""
        yield snapshot

    # --- reads --------------------------------------------------------------------------------
    def compute(
        self,
        meter,
        *,
        buckets,
        customer_ids=None,
        use_rollups=True,
        metadata=None,
        per_customer=False,
    ):
        """Partials per bucket and for the whole range (`metering.aggregation.compute`)."""
        raise NotImplementedError

    def additive_values(self, meter, windows: list[Window]) -> dict:
        """count/sum of one meter over many windows: window index → Decimal."""
        raise NotImplementedError

    def window_partials(self, meter, windows: list[Window]) -> dict:
        """Each window's own events as a Partial (window index → Partial; absent: none).
        Window by window here; a store may answer all of them at once."""
        result = {}
        for index, window in enumerate(windows):
            ranges = utc_ranges(window.ranges)
            if ranges:
                _, result[index] = self.compute(
                    meter,
                    buckets=ranges,
                    customer_ids=[window.customer_id],
                    use_rollups=meter.state == "ready",
                )
        return result

    def late_partials(self, meter, windows: list[Window]) -> dict:
        """`late_partial` of every window that has late arrivals (index → Partial)."""
        result = {}
        for index, window in enumerate(windows):
            late = self.late_partial(window, utc_ranges(window.ranges))
            if late is not None:
                result[index] = late
        return result

    def meters_partials(self, groups: list[list[Window]]) -> list[tuple[dict, dict]]:
        """For each group (the windows of one meter): its own partials and its late partials
        (as `window_partials` and `late_partials`; none for count/sum), all meters read together.
        Only stores with `reads_meters_together`."""
        raise NotImplementedError

    def late_partial(self, window: Window, own_ranges: list[Range]):
        """The window's late arrivals as a Partial whose `distinct` counts only values its own
        events lack, or None when nothing arrived."""
        raise NotImplementedError

    def window_events(self, window: Window, seen_by: ReadBoundary | None) -> list[WindowEvent]:
        raise NotImplementedError

    def customers_of_events(self, event_ids: list) -> list:
        raise NotImplementedError

    def daily_values(self, *, organization_id, since: datetime, until: datetime) -> list:
        raise NotImplementedError

    def all_time_partials(self, customer_meters: list) -> dict:
        """(customer id, meter id) → Partial over all of the customer's matching events."""
        raise NotImplementedError

    def has_user_events(self, organization_id) -> bool:
        raise NotImplementedError

    # --- lists (API, admin) ---------------------------------------------------------------------
    def list_events(self, organization_id, criteria: dict, *, descending: bool, limit: int):
        """The first `limit` user events matching `criteria` (the API's list filters, the
        admin's; every organization when `organization_id` is None; canceled events too when
        `criteria["include_canceled"]`, `sources` narrowing either) by timestamp then id,
        with the attributes of `Event` the API and the admin read. Only stores without
        `user_events_in_postgres`: the PostgreSQL store's lists are querysets."""
        raise NotImplementedError

    def count_events(self, organization_id, criteria: dict, *, cap: int) -> int:
        """How many user events `list_events` would give, counted up to `cap`."""
        raise NotImplementedError

    def customer_event_names(
        self, organization_id, *, customer_ids, external_ids, sources=None, query=None
    ) -> list[dict]:
        """The event names of these customers' events (by customer id or external id, events
        sent with the external id before the customer existed included), user and system
        events: name, source, occurrences, first_seen, last_seen; in no particular order."""
        raise NotImplementedError

    def preview(
        self, organization_id, *, filter_: dict, aggregation: dict, start, end, timeout_ms: int
    ) -> PreviewFigures:
        """A meter that may not be saved yet, over the user events in [start, end): raises
        ReadTimedOut past `timeout_ms`."""
        raise NotImplementedError

    def backfill(self, meter) -> None:
        """A store without rollups: what a new or redefined meter needs at once (its customer
        meters). The PostgreSQL store backfills rollups in chunks instead (metering.backfill)."""
        raise NotImplementedError

    def relay(self) -> int:
        """Deliver batches accepted but not received yet; returns how many (the beat runs it)."""
        return 0
