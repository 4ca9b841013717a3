"""`_cost.amount` used to be stored as a decimal string, so a `sum` meter over it read 0; it is a
JSON number now. This converts the PostgreSQL rows that still hold a string: batches of BATCH
rows found by walking the primary key, each batch its own short transaction, and only rows with
a string `_cost.amount` rewritten (no table rewrite). Meters whose filter or aggregation reads
`_cost` in an organization that had such rows are then rebuilt (their rollups counted the
strings as missing); reads use raw events until their backfill is done.

A fresh database has no such rows and runs no meter code, so the live models used below never
meet an older schema."""

from django.db import connection, migrations, transaction

from metering import meters
from metering.models import Meter

BATCH = 5000

CONVERT_SQL = """
WITH batch AS (
    SELECT id FROM metering_event
    WHERE id > %s AND metadata ? '_cost'
      AND jsonb_typeof(metadata #> '{_cost,amount}') = 'string'
    ORDER BY id
    LIMIT %s
)
UPDATE metering_event e
SET metadata = jsonb_set(
    e.metadata, '{_cost,amount}', to_jsonb((e.metadata #>> '{_cost,amount}')::numeric)
)
FROM batch
WHERE e.id = batch.id
RETURNING e.id, e.organization_id
"""

READS_COST_SQL = """
SELECT id FROM metering_meter
WHERE organization_id = ANY(%s)
  AND (strpos(filter::text, '"_cost') > 0 OR strpos(aggregation::text, '"_cost') > 0)
"""

LOWEST_UUID = "00000000-0000-0000-0000-000000000000"


def convert_cost_amounts(batch: int = BATCH) -> tuple[int, set]:
    """Convert every string amount; returns (rows converted, their organization ids)."""
    last, converted, organizations = LOWEST_UUID, 0, set()
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(CONVERT_SQL, [last, batch])
            rows = cursor.fetchall()
        if not rows:
            return converted, organizations
        converted += len(rows)
        organizations |= {organization for _, organization in rows}
        last = max(event_id for event_id, _ in rows)


def rebuild_cost_meters(organizations: set) -> list:
    with connection.cursor() as cursor:
        cursor.execute(READS_COST_SQL, [list(organizations)])
        ids = [row[0] for row in cursor.fetchall()]
    for meter in Meter.objects.filter(pk__in=ids):
        meters.start_rebuild(meter=meter)
    return ids


def forwards(apps, schema_editor):
    converted, organizations = convert_cost_amounts()
    if converted:
        rebuild_cost_meters(organizations)


class Migration(migrations.Migration):
    # each batch commits on its own: no long transaction over a large events table
    atomic = False

    dependencies = [
        ("metering", "0008_clickhouse_store"),
    ]

    operations = [
        # backwards: numbers stay numbers (every reader takes both forms)
        migrations.RunPython(forwards, migrations.RunPython.noop, elidable=True),
    ]
