"""Create the periodic-task schedule idempotently (django-celery-beat DatabaseScheduler)."""

from django.core.management.base import BaseCommand

from core.schedules import ensure_schedules


class Command(BaseCommand):
    help = "Create or update the beat schedule (safe to run repeatedly)."

    def handle(self, *args, **options):
        created = ensure_schedules()
        if options["verbosity"]:
            self.stdout.write(f"schedules ensured ({created} created)")
