"""Roll up the stored events of a meter now (what the Celery task does), with progress."""

from django.core.management.base import BaseCommand, CommandError

from metering import backfill, meters
from metering.models import Meter, MeterState


class Command(BaseCommand):
    help = "Backfill (or rebuild with --rebuild) the rollups of a meter, chunk by chunk."

    def add_arguments(self, parser):
        parser.add_argument("meter_id")
        parser.add_argument(
            "--rebuild", action="store_true", help="drop the rollups and rebuild from events"
        )
        parser.add_argument("--chunk-events", type=int, default=backfill.BACKFILL_CHUNK_EVENTS)

    def handle(self, meter_id, rebuild, chunk_events, **options):
        meter = Meter.objects.filter(pk=meter_id).first()
        if meter is None:
            raise CommandError(f"No meter {meter_id}")
        if rebuild:
            meters.start_rebuild(meter=meter, enqueue=False)
        elif meter.state == MeterState.READY:
            self.stdout.write("Meter is ready; nothing to backfill (use --rebuild).")
            return
        while not backfill.backfill_step(meter.pk, chunk_events=chunk_events):
            meter.refresh_from_db()
            self.stdout.write(
                f"{meter.backfill_events_done:,}/{meter.backfill_events_total:,} events "
                f"({meter.backfill_progress:.0%})"
            )
        self.stdout.write(self.style.SUCCESS("Meter ready."))
