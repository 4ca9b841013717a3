"""Rollup deltas: one row per (customer, hour, transaction) holding every meter's partials as
parallel arrays, instead of one row per meter. An ingest batch writes about a third as many rows
(and primary-key entries), and compaction deletes a third as many. `metering_meterrollup_delta`
becomes a view that unnests them into the old shape, so every reader stays as it was."""

from django.db import migrations

FORWARD = """
DROP VIEW metering_meterrollup;
CREATE TABLE metering_rollup_delta (
    customer_id uuid NOT NULL,
    bucket timestamptz NOT NULL,
    txid bigint NOT NULL,
    meter_ids uuid[] NOT NULL,
    event_counts bigint[] NOT NULL,
    numeric_counts bigint[] NOT NULL,
    numeric_sums numeric[] NOT NULL,
    numeric_mins numeric[] NOT NULL,
    numeric_maxs numeric[] NOT NULL,
    PRIMARY KEY (customer_id, bucket, txid)
);
INSERT INTO metering_rollup_delta
SELECT customer_id, bucket, txid, array_agg(meter_id ORDER BY meter_id),
       array_agg(event_count ORDER BY meter_id), array_agg(numeric_count ORDER BY meter_id),
       array_agg(numeric_sum ORDER BY meter_id), array_agg(numeric_min ORDER BY meter_id),
       array_agg(numeric_max ORDER BY meter_id)
FROM metering_meterrollup_delta GROUP BY customer_id, bucket, txid;
DROP TABLE metering_meterrollup_delta;
CREATE VIEW metering_meterrollup_delta AS
SELECT u.meter_id, d.customer_id, d.bucket, d.txid, u.event_count, u.numeric_count,
       u.numeric_sum, u.numeric_min, u.numeric_max
FROM metering_rollup_delta d
CROSS JOIN LATERAL unnest(d.meter_ids, d.event_counts, d.numeric_counts, d.numeric_sums,
                          d.numeric_mins, d.numeric_maxs)
     AS u(meter_id, event_count, numeric_count, numeric_sum, numeric_min, numeric_max);
""" + """
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
"""

BACKWARD = """
DROP VIEW metering_meterrollup;
DROP VIEW metering_meterrollup_delta;
CREATE TABLE metering_meterrollup_delta (
    meter_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    bucket timestamptz NOT NULL,
    txid bigint NOT NULL,
    event_count bigint NOT NULL,
    numeric_count bigint NOT NULL,
    numeric_sum numeric,
    numeric_min numeric,
    numeric_max numeric,
    PRIMARY KEY (meter_id, customer_id, bucket, txid)
);
INSERT INTO metering_meterrollup_delta
SELECT u.meter_id, d.customer_id, d.bucket, d.txid, sum(u.event_count), sum(u.numeric_count),
       sum(u.numeric_sum), min(u.numeric_min), max(u.numeric_max)
FROM metering_rollup_delta d
CROSS JOIN LATERAL unnest(d.meter_ids, d.event_counts, d.numeric_counts, d.numeric_sums,
                          d.numeric_mins, d.numeric_maxs)
     AS u(meter_id, event_count, numeric_count, numeric_sum, numeric_min, numeric_max)
GROUP BY 1, 2, 3, 4;
DROP TABLE metering_rollup_delta;
""" + FORWARD[FORWARD.index("CREATE VIEW metering_meterrollup AS"):]


class Migration(migrations.Migration):
    dependencies = [("metering", "0009_cost_amount_numbers")]

    operations = [
        migrations.RunSQL(FORWARD, BACKWARD),
        migrations.AlterModelOptions(name="rollupdelta", options={"managed": False}),
    ]
