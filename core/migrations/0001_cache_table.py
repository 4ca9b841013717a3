from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    # The rate-limit counters live in the cache; with no CACHE_URL that is a database table,
    # which `migrate` then provides like every other table. Idempotent.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = []

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
