"""Event ingestion: validate a whole batch, then write it set-based in one transaction (no
per-event ORM save), rolling it up for every meter before the response (read-your-writes)."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from django.conf import settings
from django.db import OperationalError, connection, transaction

from core import timestamps
from core.db import bound_cursor
from core.errors import ErrorList
from core.metadata import describe, validate_metadata
from customers.models import Customer, Organization
from metering import hooks, jsonio, locks, rollups, stores
from metering.errors import InvalidEvents

EVENT_FIELDS = {
    "name",
    "customer_id",
    "external_customer_id",
    "timestamp",
    "external_id",
    "parent_id",
    "metadata",
    "organization_id",
    "member_id",
    "external_member_id",
}
MAX_NAME = 128
MAX_EXTERNAL = 256


class IngestedBatch:
    """What `hooks.events_ingested` receivers get as `batch`: the events' ids, and their customers
    read once for every receiver that asks (alerts, spend thresholds, credit top-ups)."""

    def __init__(self, event_ids: list):
        self.event_ids = event_ids

    @cached_property
    def customer_ids(self) -> list:
        return stores.current().customers_of_events(self.event_ids)


@dataclass(frozen=True)
class IngestResult:
    inserted: int
    duplicates: int
    event_ids: list


@dataclass
class EventRow:
    name: str
    timestamp: datetime
    customer_id: uuid.UUID | None
    external_customer_id: str | None
    external_id: str | None
    parent_reference: str | None
    metadata: dict


def _string(event, key, loc, errors, *, required=False, max_length=MAX_EXTERNAL):
    value = event.get(key)
    if value is None:
        if required:
            errors.add([*loc, key], "Field required", "missing")
        return None
    if not isinstance(value, str):
        errors.add(
            [*loc, key], f"Input should be a valid string, not {describe(value)}", "string_type"
        )
        return None
    if not 1 <= len(value) <= max_length:
        errors.add([*loc, key], f"String should have 1 to {max_length} characters", "string_length")
        return None
    if "\x00" in value:
        errors.add([*loc, key], "NUL characters are not allowed", "string_nul")
        return None
    return value


def _timestamp(event, loc, errors, now: datetime, latest: datetime):
    raw = event.get("timestamp")
    if raw is None:
        return now
    if not isinstance(raw, str):
        errors.add([*loc, "timestamp"], "Input should be an ISO 8601 string", "datetime_type")
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        errors.add(
            [*loc, "timestamp"],
            "Input should be a valid ISO 8601 datetime",
            "datetime_parsing",
            raw,
        )
        return None
    if value.tzinfo is None:
        errors.add(
            [*loc, "timestamp"],
            "Timestamp must include a UTC offset (e.g. Z or +02:00)",
            "timezone_aware",
        )
        return None
    utc = timestamps.to_utc(value)
    if utc is None:
        errors.add([*loc, "timestamp"], timestamps.RANGE_MESSAGE, "datetime_range", raw)
        return None
    if utc > latest:
        errors.add(
            [*loc, "timestamp"],
            "Timestamp must not be more than 5 minutes in the future",
            "future_timestamp",
        )
        return None
    return utc


def validate_events(
    *, organization: Organization, events: list, now: datetime
) -> tuple[list[EventRow], ErrorList]:
    """Check every event and report every problem; nothing is written by this function."""
    errors = ErrorList()
    rows: list[EventRow] = []
    # once per batch: a settings lookup per event was 3 % of a batch's time
    latest = now + timedelta(seconds=settings.EVENT_FUTURE_TOLERANCE_SECONDS)
    customer_refs: dict[uuid.UUID, list[int]] = {}
    for index, event in enumerate(events):
        loc = ["events", index]
        if not isinstance(event, dict):
            errors.add(loc, "Event must be an object", "dict_type")
            continue
        before = len(errors.items)
        for key in event:
            if key not in EVENT_FIELDS:
                errors.add([*loc, key], "Extra inputs are not permitted", "extra_forbidden")
        if event.get("organization_id") is not None:
            errors.add(
                [*loc, "organization_id"],
                "Setting organization_id is disallowed when using an organization token.",
                "value_error",
            )
        for unsupported in ("member_id", "external_member_id"):
            if event.get(unsupported) is not None:
                errors.add(
                    [*loc, unsupported],
                    "Member attribution is not supported by Meterline.",
                    "value_error",
                )
        name = _string(event, "name", loc, errors, required=True, max_length=MAX_NAME)
        has_id = event.get("customer_id") is not None
        has_external = event.get("external_customer_id") is not None
        customer_id = None
        external_customer_id = None
        if has_id == has_external:
            errors.add(
                loc,
                "Exactly one of customer_id or external_customer_id is required",
                "customer_reference",
            )
        elif has_id:
            raw = event["customer_id"]
            try:
                customer_id = uuid.UUID(raw) if isinstance(raw, str) else None
            except ValueError:
                customer_id = None
            if customer_id is None:
                errors.add([*loc, "customer_id"], "Input should be a valid UUID", "uuid_parsing")
            else:
                customer_refs.setdefault(customer_id, []).append(index)
        else:
            external_customer_id = _string(event, "external_customer_id", loc, errors)
        timestamp = _timestamp(event, loc, errors, now, latest)
        external_id = _string(event, "external_id", loc, errors)
        parent_reference = _string(event, "parent_id", loc, errors)
        metadata = validate_metadata(
            event.get("metadata"), [*loc, "metadata"], errors, structured=True
        )
        if len(errors.items) == before:
            rows.append(
                EventRow(
                    name,
                    timestamp,
                    customer_id,
                    external_customer_id,
                    external_id,
                    parent_reference,
                    metadata,
                )
            )
    if customer_refs:
        known = set(
            Customer.objects.active()
            .filter(organization=organization, pk__in=list(customer_refs))
            .values_list("pk", flat=True)
        )
        for customer_id, indexes in customer_refs.items():
            if customer_id not in known:
                for index in indexes:
                    errors.add(
                        ["events", index, "customer_id"],
                        "Customer does not exist.",
                        "customer_not_found",
                    )
    errors.items.sort(
        key=lambda item: (
            item["loc"][1] if len(item["loc"]) > 1 and isinstance(item["loc"][1], int) else -1
        )
    )
    return rows, errors


# Time-ordered ids (UUID version 7: 48-bit Unix milliseconds, then random bits): new events land
# at the right edge of the primary key instead of on a random page of a 10M-row index (a page
# read, and after each checkpoint a full-page image in the WAL, per event).
EVENT_ID_SQL = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) "
    "FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)

# this transaction's id as a bigint (xid8 has no direct cast): metering.queries' arrival rule
CURRENT_TXID_SQL = "pg_current_xact_id()::text::bigint"

INSERT_SQL = """
WITH input AS (
    SELECT * FROM unnest(
        %(names)b::text[], %(timestamps)b::timestamptz[], %(customer_ids)b::uuid[],
        %(external_customer_ids)b::text[], %(external_ids)b::text[], %(parents)b::text[],
        %(metadata)b::jsonb[]
    ) WITH ORDINALITY AS t(name, ts, customer_id, external_customer_id, external_id, parent_reference, metadata, ord)
)
INSERT INTO metering_event (
    id, organization_id, name, source, timestamp, ingested_at, arrival_txid, customer_id,
    external_customer_id, external_id, parent_reference, metadata
)
SELECT __EVENT_ID__, %(org)s, input.name, 'user', input.ts, now(), (SELECT __TXID__),
       COALESCE(input.customer_id, c.id), input.external_customer_id, input.external_id,
       input.parent_reference, input.metadata
FROM input
LEFT JOIN customers_customer c
       ON input.customer_id IS NULL AND c.organization_id = %(org)s
      AND c.external_id = input.external_customer_id AND c.deleted_at IS NULL
-- a fixed lock order on the idempotency key: overlapping concurrent batches can't deadlock
ORDER BY input.external_id NULLS LAST, input.ord
ON CONFLICT (organization_id, external_id) WHERE external_id IS NOT NULL DO NOTHING
RETURNING id, customer_id, timestamp, name
""".replace("__EVENT_ID__", EVENT_ID_SQL).replace("__TXID__", CURRENT_TXID_SQL)

RESOLVE_PARENTS_SQL = """
UPDATE metering_event e SET parent_id = p.id
FROM metering_event p
WHERE e.id = ANY(%(ids)b) AND e.parent_reference IS NOT NULL AND e.parent_id IS NULL
  AND p.organization_id = %(org)s AND p.id <> e.id
  AND (p.external_id = e.parent_reference
       OR p.id = CASE WHEN e.parent_reference ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                      THEN e.parent_reference::uuid END)
"""

ADOPT_CHILDREN_SQL = """
UPDATE metering_event c SET parent_id = n.id
FROM metering_event n
WHERE n.id = ANY(%(ids)b) AND n.external_id IS NOT NULL
  AND c.organization_id = %(org)s AND c.parent_id IS NULL AND c.parent_reference = n.external_id
  AND c.id <> n.id
"""

_FIRST_EVENT_UPDATE = """, locked AS (
    -- only rows that need the update, locked in id order: concurrent batches sharing customers
    -- wait for each other instead of deadlocking
    SELECT c.id, m.first FROM customers_customer c JOIN m ON c.id = m.customer_id
    WHERE c.first_user_event_at IS NULL OR c.first_user_event_at > m.first
    ORDER BY c.id FOR NO KEY UPDATE OF c
)
UPDATE customers_customer c
SET first_user_event_at = LEAST(COALESCE(c.first_user_event_at, locked.first), locked.first)
FROM locked WHERE c.id = locked.id
"""

# stored events by id (linking)
FIRST_EVENT_SQL = (
    """
WITH m AS (
    SELECT customer_id, min(timestamp) AS first FROM metering_event
    WHERE id = ANY(%(ids)b) AND customer_id IS NOT NULL GROUP BY customer_id
)"""
    + _FIRST_EVENT_UPDATE
)

# an ingest's own figures, taken from its INSERT … RETURNING (no second read of the batch)
FIRST_EVENT_OF_BATCH_SQL = (
    """
WITH m AS (
    SELECT * FROM unnest(%(customers)s::uuid[], %(firsts)s::timestamptz[]) AS m(customer_id, first)
)"""
    + _FIRST_EVENT_UPDATE
)


EVENT_NAMES_OF_BATCH_SQL = """
INSERT INTO metering_eventname (organization_id, name, source, occurrences, first_seen, last_seen)
SELECT %(org)s, n.name, %(source)s, n.occurrences, n.first_seen, n.last_seen
FROM unnest(%(names)s::text[], %(occurrences)s::bigint[], %(firsts)s::timestamptz[],
            %(lasts)s::timestamptz[]) AS n(name, occurrences, first_seen, last_seen)
ORDER BY n.name
ON CONFLICT (organization_id, name, source) DO UPDATE SET
    occurrences = metering_eventname.occurrences + EXCLUDED.occurrences,
    first_seen = LEAST(metering_eventname.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(metering_eventname.last_seen, EXCLUDED.last_seen)
"""


def _batch_figures(inserted: list[tuple]) -> tuple[dict, dict]:
    """From the inserted rows (id, customer id, timestamp, name): each customer's earliest
    timestamp, and per name [occurrences, first, last]."""
    firsts: dict = {}
    names: dict = {}
    for _, customer_id, moment, name in inserted:
        if customer_id is not None:
            first = firsts.get(customer_id)
            if first is None or moment < first:
                firsts[customer_id] = moment
        seen = names.get(name)
        if seen is None:
            names[name] = [1, moment, moment]
        else:
            seen[0] += 1
            if moment < seen[1]:
                seen[1] = moment
            elif moment > seen[2]:
                seen[2] = moment
    return firsts, names


def _dump_metadata(metadata: dict) -> str:
    # Decimals go to jsonb as the number written by the sender (exact), not as a float.
    return jsonio.dumps(metadata)


def insert_events(
    *, organization: Organization, rows: list[EventRow], source: str = "user"
) -> list:
    """Write validated rows in the current transaction; returns the ids actually inserted."""
    if not rows:
        return []
    params = {
        "org": organization.pk,
        "names": [r.name for r in rows],
        "timestamps": [r.timestamp for r in rows],
        "customer_ids": [r.customer_id for r in rows],
        "external_customer_ids": [r.external_customer_id for r in rows],
        "external_ids": [r.external_id for r in rows],
        "parents": [r.parent_reference for r in rows],
        "metadata": [_dump_metadata(r.metadata) for r in rows],
    }
    sql = INSERT_SQL if source == "user" else INSERT_SQL.replace("'user'", "%(source)s")
    params["source"] = source
    with bound_cursor() as cursor:
        locks.lock_external_ids(cursor, organization.pk, params["external_customer_ids"])
        cursor.execute(sql, params)
        inserted = cursor.fetchall()
        ids = [row[0] for row in inserted]
        if not ids:
            return ids
        keyed = {"ids": ids, "org": organization.pk}
        if any(r.parent_reference for r in rows):
            cursor.execute(RESOLVE_PARENTS_SQL, keyed)
        if any(r.external_id for r in rows):
            cursor.execute(ADOPT_CHILDREN_SQL, keyed)
        rollups.after_insert(cursor, organization_id=organization.pk, event_ids=ids)
        # Row locks are taken in one global order by every writer (rollups by meter, customer
        # and bucket; then customers by id; then event names by name) and as late as possible,
        # since they are held until commit.
        firsts, names = _batch_figures(inserted)
        if firsts:
            cursor.execute(
                FIRST_EVENT_OF_BATCH_SQL,
                {"customers": list(firsts), "firsts": list(firsts.values())},
            )
        cursor.execute(
            EVENT_NAMES_OF_BATCH_SQL,
            {
                "org": organization.pk,
                "source": source,
                "names": list(names),
                "occurrences": [n[0] for n in names.values()],
                "firsts": [n[1] for n in names.values()],
                "lasts": [n[2] for n in names.values()],
            },
        )
    return ids


def dedupe_within_batch(rows: list[EventRow]) -> list[EventRow]:
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row.external_id is not None:
            if row.external_id in seen:
                continue  # first one wins
            seen.add(row.external_id)
        unique.append(row)
    return unique


INGEST_ATTEMPTS = 3
TRANSIENT_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure


def is_transient(exc: Exception) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in TRANSIENT_SQLSTATES


def announce(organization: Organization, event_ids: list) -> None:
    """Tell the receivers of `events_ingested` (alerts, spend thresholds, credit top-ups) about
    new usage, in the writing transaction; nothing for no events."""
    if event_ids:
        hooks.events_ingested.send(
            sender=Organization,
            organization=organization,
            event_ids=event_ids,
            batch=IngestedBatch(event_ids),
        )


def ingest_events(*, organization: Organization, events: list) -> IngestResult:
    """All or nothing: any invalid event rejects the batch (InvalidEvents), else one
    transaction inserts it; external_ids already stored (or repeated) count as duplicates."""
    now = datetime.now(UTC)
    rows, errors = validate_events(organization=organization, events=events, now=now)
    errors.raise_if_any(InvalidEvents)
    unique = dedupe_within_batch(rows)
    for attempt in range(1, INGEST_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                ids = stores.current().write(organization=organization, rows=unique)
                announce(organization, ids)
            break
        except OperationalError as exc:
            # The batch is one idempotent transaction, so a deadlock victim can simply run again;
            # inside a caller's transaction we can't, and the error goes up (a 503 for the API).
            if not is_transient(exc) or attempt == INGEST_ATTEMPTS or connection.in_atomic_block:
                raise
    return IngestResult(inserted=len(ids), duplicates=len(rows) - len(ids), event_ids=ids)
