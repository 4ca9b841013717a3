"""The one lock discipline of the metering writers, in the order every transaction takes them.

1. **Customer-reference slots** (`lock_external_ids`): an ingest that resolves events by
   `external_customer_id` holds the slots of its ids in shared mode, from before its INSERT until
   commit; a customer that gains an external id (create, or update of an id-less customer) holds
   its slot in exclusive mode before it links earlier events. Either the ingest commits first and
   the linking UPDATE (a later statement, with a newer snapshot) sees its events, or the customer
   commits first and the ingest's INSERT sees the customer: no event can stay unlinked.
   External ids are hashed into `EXTERNAL_ID_SLOTS` slots per organization so that a batch of
   1,000 distinct ids takes a bounded number of locks (PostgreSQL's lock table is shared and
   finite); a collision only makes a sign-up wait for an unrelated in-flight ingest.
2. **Organization rollup lock** (`lock_organization`): ingestion, linking and rollup compaction
   in shared mode; meter creation, redefinition, deletion and every backfill chunk in exclusive
   mode. A writer reads the meter list after taking it, so a meter committed under the exclusive
   lock is seen by every later ingest, and every ingest that committed before is seen by the
   meter's creation; a compaction never runs alongside a rebuild of the same organization.
3. **Row locks**, in one global order and as late as possible: customer meters (meter,
   customer), then customer rows by id, then event-name rows by name. Ingestion locks no rollup
   row (it appends deltas keyed by its own transaction id); compaction and backfills upsert the
   compact tiers in key order and never run concurrently for one organization.

Advisory keys live in their own namespaces (the second argument of `hashtextextended`) so they
never collide with each other or with other users of advisory locks.
"""

import zlib

ORGANIZATION_NAMESPACE = 7
EXTERNAL_ID_NAMESPACE = 8
COMPACTION_NAMESPACE = 9
EXTERNAL_ID_SLOTS = 64

ORGANIZATION_KEY = f"hashtextextended(%s::text, {ORGANIZATION_NAMESPACE})"
LOCK_SHARED = f"SELECT pg_advisory_xact_lock_shared({ORGANIZATION_KEY})"
LOCK_EXCLUSIVE = f"SELECT pg_advisory_xact_lock({ORGANIZATION_KEY})"
TRY_SHARED = f"SELECT pg_try_advisory_xact_lock_shared({ORGANIZATION_KEY})"
# one statement for all slots of a batch, acquired in ascending key order
SLOTS_SHARED = f"""
SELECT count(pg_advisory_xact_lock_shared(k)) FROM (
    SELECT DISTINCT hashtextextended(%s::text || ':' || s::text, {EXTERNAL_ID_NAMESPACE}) AS k
    FROM unnest(%s::int[]) AS s ORDER BY 1
) keys
"""
SLOT_EXCLUSIVE = (
    "SELECT pg_advisory_xact_lock("
    f"hashtextextended(%s::text || ':' || %s::text, {EXTERNAL_ID_NAMESPACE}))"
)


def external_id_slot(external_id: str) -> int:
    # crc32: stable across processes (Python's hash() is salted per process)
    return zlib.crc32(external_id.encode("utf-8")) % EXTERNAL_ID_SLOTS


def lock_external_ids(cursor, organization_id, external_ids, *, exclusive: bool = False) -> None:
    slots = sorted({external_id_slot(value) for value in external_ids if value is not None})
    if not slots:
        return
    if exclusive:
        for slot in slots:
            cursor.execute(SLOT_EXCLUSIVE, [str(organization_id), slot])
    else:
        cursor.execute(SLOTS_SHARED, [str(organization_id), slots])


def lock_organization(cursor, organization_id, *, exclusive: bool = False) -> None:
    cursor.execute(LOCK_EXCLUSIVE if exclusive else LOCK_SHARED, [str(organization_id)])


def try_lock_organization_shared(cursor, organization_id) -> bool:
    """The shared rollup lock if nobody holds it exclusively right now (compaction: an
    organization in the middle of a backfill chunk or a meter rebuild is skipped this round
    instead of holding up the others)."""
    cursor.execute(TRY_SHARED, [str(organization_id)])
    return cursor.fetchone()[0]
