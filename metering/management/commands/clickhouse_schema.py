"""Create or migrate the ClickHouse event store's schema (EVENT_STORE=clickhouse)."""

from django.core.management.base import BaseCommand

from metering.stores import clickhouse, clickhouse_schema


class Command(BaseCommand):
    help = (
        "Create or migrate the ClickHouse schema at CLICKHOUSE_URL (ON CLUSTER with Replicated "
        "tables and a Distributed one when CLICKHOUSE_CLUSTER is set). --print shows the DDL."
    )

    def add_arguments(self, parser):
        parser.add_argument("--print", action="store_true", help="print the DDL, run nothing")

    def handle(self, *args, **options):
        layout = clickhouse.layout()
        if options["print"]:
            self.stdout.write(clickhouse_schema.ledger(layout) + ";")
            for version, statements in clickhouse_schema.migrations(layout):
                self.stdout.write(f"-- version {version}")
                for statement in statements:
                    self.stdout.write(statement + ";")
            return
        applied = clickhouse_schema.migrate(clickhouse.client(), layout)
        where = f"cluster {layout.cluster}" if layout.cluster else "a single node"
        self.stdout.write(
            f"ClickHouse schema of {layout.database} on {where}: "
            + (f"applied {', '.join(map(str, applied))}" if applied else "up to date")
        )
