"""Send the event batches PostgreSQL accepted but ClickHouse has not received (the relay)."""

from datetime import timedelta

from django.core.management.base import BaseCommand

from metering.stores import clickhouse


class Command(BaseCommand):
    help = "Resend undelivered event batches to ClickHouse (EVENT_STORE=clickhouse)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--min-age",
            type=float,
            default=clickhouse.RELAY_MIN_AGE.total_seconds(),
            help="leave batches younger than this many seconds to their own request",
        )

    def handle(self, *args, **options):
        delivered = clickhouse.relay(min_age=timedelta(seconds=options["min_age"]))
        oldest = clickhouse.watermark()
        self.stdout.write(
            f"delivered {delivered} batch(es); "
            + (f"oldest undelivered from {oldest:%Y-%m-%d %H:%M:%S}" if oldest else "none pending")
        )
