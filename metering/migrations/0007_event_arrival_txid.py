from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("metering", "0006_drop_event_org_extcust_ts")]

    # A nullable column without a default: PostgreSQL adds it without rewriting the table.
    operations = [
        migrations.AddField(
            model_name="event",
            name="arrival_txid",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
    ]
