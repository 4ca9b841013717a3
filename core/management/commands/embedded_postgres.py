from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from config.embedded import embedded_running, stop_embedded_postgres


class Command(BaseCommand):
    help = "Manage the embedded PostgreSQL under .data/ (used when DATABASE_URL is unset)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["stop", "status"])

    def handle(self, *args, action, **options):
        if action == "status":
            # (starts nothing: the server starts with a first database connection)
            self.stdout.write("running" if embedded_running(settings.DATA_DIR) else "not running")
            return
        if not settings.EMBEDDED_POSTGRES:
            raise CommandError("DATABASE_URL is set: there is no embedded PostgreSQL to stop.")
        connections.close_all()
        stopped = stop_embedded_postgres(settings.DATA_DIR)
        self.stdout.write("stopped" if stopped else "was not running")
