"""The event list's external-customer filter is served by `event_customer_ts` (linked events:
through the customer holding the id) and the partial `event_unlinked_customer` (events not linked
yet), so `event_org_extcust_ts` — a random-page insert per event — goes (docs/performance.md,
"Event indexes"). Dropped concurrently: ingestion isn't blocked while it goes."""

from django.contrib.postgres.operations import RemoveIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('metering', '0005_rollup_tiers'),
    ]

    operations = [
        RemoveIndexConcurrently(model_name='event', name='event_org_extcust_ts'),
    ]
