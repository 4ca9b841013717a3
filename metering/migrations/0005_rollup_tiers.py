"""Rollups without lock contention (docs/meters.md, "Rollup storage").

The hourly tables become the compact tier (renamed, data kept); a daily tier is filled from
them; ingestion appends per-transaction deltas; `metering_meterrollup` and
`metering_meteruniquerollup` become views (compact + pending deltas) so that what readers see
keeps its name and meaning."""

import django.db.models.deletion
from django.db import migrations, models

import metering.models


def key_fields():
    return [
        ('meter', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='metering.meter')),
        ('customer', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='customers.customer')),
        ('bucket', models.DateTimeField()),
    ]


def partial_fields():
    return [
        ('event_count', models.BigIntegerField(default=0)),
        ('numeric_count', models.BigIntegerField(default=0)),
        ('numeric_sum', metering.models.NumericField(null=True)),
        ('numeric_min', metering.models.NumericField(null=True)),
        ('numeric_max', metering.models.NumericField(null=True)),
    ]


def pk(*names):
    return ('pk', models.CompositePrimaryKey(*names, blank=True, editable=False, primary_key=True, serialize=False))


RENAME = """
ALTER TABLE metering_meterrollup RENAME TO metering_meterrollup_hour;
ALTER TABLE metering_meterrollup_hour RENAME CONSTRAINT metering_meterrollup_pkey TO metering_meterrollup_hour_pkey;
ALTER TABLE metering_meteruniquerollup RENAME TO metering_meteruniquerollup_hour;
ALTER TABLE metering_meteruniquerollup_hour RENAME CONSTRAINT metering_meteruniquerollup_pkey TO metering_meteruniquerollup_hour_pkey;
"""

RENAME_BACK = """
ALTER TABLE metering_meterrollup_hour RENAME CONSTRAINT metering_meterrollup_hour_pkey TO metering_meterrollup_pkey;
ALTER TABLE metering_meterrollup_hour RENAME TO metering_meterrollup;
ALTER TABLE metering_meteruniquerollup_hour RENAME CONSTRAINT metering_meteruniquerollup_hour_pkey TO metering_meteruniquerollup_pkey;
ALTER TABLE metering_meteruniquerollup_hour RENAME TO metering_meteruniquerollup;
"""

FILL_DAYS = """
INSERT INTO metering_meterrollup_day (meter_id, customer_id, bucket, event_count, numeric_count,
    numeric_sum, numeric_min, numeric_max)
SELECT meter_id, customer_id, date_trunc('day', bucket, 'UTC'), sum(event_count), sum(numeric_count),
       COALESCE(sum(numeric_sum), 0), min(numeric_min), max(numeric_max)
FROM metering_meterrollup_hour GROUP BY 1, 2, 3;
INSERT INTO metering_meteruniquerollup_day (meter_id, customer_id, bucket, value_key)
SELECT DISTINCT meter_id, customer_id, date_trunc('day', bucket, 'UTC'), value_key
FROM metering_meteruniquerollup_hour;
"""

VIEWS = """
CREATE VIEW metering_meterrollup AS
SELECT meter_id, customer_id, bucket, sum(event_count)::bigint AS event_count,
       sum(numeric_count)::bigint AS numeric_count, sum(numeric_sum) AS numeric_sum,
       min(numeric_min) AS numeric_min, max(numeric_max) AS numeric_max
FROM (
    SELECT meter_id, customer_id, bucket, event_count, numeric_count, numeric_sum, numeric_min,
           numeric_max FROM metering_meterrollup_hour
    UNION ALL
    SELECT meter_id, customer_id, bucket, event_count, numeric_count, numeric_sum, numeric_min,
           numeric_max FROM metering_meterrollup_delta
) r
GROUP BY meter_id, customer_id, bucket;
CREATE VIEW metering_meteruniquerollup AS
SELECT DISTINCT meter_id, customer_id, bucket, value_key FROM (
    SELECT meter_id, customer_id, bucket, value_key FROM metering_meteruniquerollup_hour
    UNION ALL
    SELECT meter_id, customer_id, bucket, value_key FROM metering_meteruniquerollup_delta
) r;
"""

# Reverse only: before the delta tables go, their pending partials join the hourly rows (which
# become the single rollup table of 0004 again).
FOLD_DELTAS = """
INSERT INTO metering_meterrollup_hour AS r (meter_id, customer_id, bucket, event_count,
    numeric_count, numeric_sum, numeric_min, numeric_max)
SELECT meter_id, customer_id, bucket, sum(event_count), sum(numeric_count),
       COALESCE(sum(numeric_sum), 0), min(numeric_min), max(numeric_max)
FROM metering_meterrollup_delta GROUP BY 1, 2, 3
ON CONFLICT (meter_id, customer_id, bucket) DO UPDATE SET
    event_count = r.event_count + EXCLUDED.event_count,
    numeric_count = r.numeric_count + EXCLUDED.numeric_count,
    numeric_sum = r.numeric_sum + EXCLUDED.numeric_sum,
    numeric_min = LEAST(r.numeric_min, EXCLUDED.numeric_min),
    numeric_max = GREATEST(r.numeric_max, EXCLUDED.numeric_max);
INSERT INTO metering_meteruniquerollup_hour (meter_id, customer_id, bucket, value_key)
SELECT DISTINCT meter_id, customer_id, bucket, value_key FROM metering_meteruniquerollup_delta
ON CONFLICT DO NOTHING;
"""

DROP_VIEWS = """
DROP VIEW metering_meterrollup;
DROP VIEW metering_meteruniquerollup;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('customers', '0001_initial'),
        ('metering', '0004_alter_customermeter_options'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(RENAME, RENAME_BACK)],
            state_operations=[
                migrations.AlterModelOptions(name='meterrollup', options={'managed': False}),
                migrations.AlterModelOptions(name='meteruniquerollup', options={'managed': False}),
                migrations.CreateModel(
                    name='RollupHour',
                    fields=[*key_fields(), pk('meter', 'customer', 'bucket'), *partial_fields()],
                    options={'db_table': 'metering_meterrollup_hour'},
                ),
                migrations.CreateModel(
                    name='UniqueRollupHour',
                    fields=[*key_fields(), pk('meter', 'customer', 'bucket', 'value_key'), ('value_key', models.TextField())],
                    options={'db_table': 'metering_meteruniquerollup_hour'},
                ),
            ],
        ),
        migrations.CreateModel(
            name='RollupDay',
            fields=[*key_fields(), pk('meter', 'customer', 'bucket'), *partial_fields()],
            options={'db_table': 'metering_meterrollup_day'},
        ),
        migrations.CreateModel(
            name='RollupDelta',
            fields=[*key_fields(), pk('meter', 'customer', 'bucket', 'txid'), ('txid', models.BigIntegerField()), *partial_fields()],
            options={'db_table': 'metering_meterrollup_delta'},
        ),
        migrations.CreateModel(
            name='UniqueRollupDay',
            fields=[*key_fields(), pk('meter', 'customer', 'bucket', 'value_key'), ('value_key', models.TextField())],
            options={'db_table': 'metering_meteruniquerollup_day'},
        ),
        migrations.CreateModel(
            name='UniqueRollupDelta',
            fields=[*key_fields(), pk('meter', 'customer', 'bucket', 'txid', 'value_key'), ('txid', models.BigIntegerField()), ('value_key', models.TextField())],
            options={'db_table': 'metering_meteruniquerollup_delta'},
        ),
        migrations.RunSQL(migrations.RunSQL.noop, FOLD_DELTAS),
        migrations.RunSQL(FILL_DAYS, migrations.RunSQL.noop),
        migrations.RunSQL(VIEWS, DROP_VIEWS),
    ]
