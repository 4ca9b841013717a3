"""Close every billing period due at --as-of (default now), catching up several if needed."""

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from billing import cycles


class Command(BaseCommand):
    help = "Close due billing periods (end + BILLING_GRACE ≤ --as-of) and issue their invoices."

    def add_arguments(self, parser):
        parser.add_argument(
            "--as-of",
            help="ISO 8601 instant with offset (default: now). In the future it simulates time.",
        )

    def handle(self, *args, as_of=None, **options):
        moment = None
        if as_of:
            try:
                moment = datetime.fromisoformat(as_of)
            except ValueError:
                raise CommandError(f"--as-of: not an ISO 8601 datetime: {as_of!r}")
            if moment.tzinfo is None:
                raise CommandError("--as-of needs a UTC offset (e.g. Z or +02:00)")
        report = cycles.close_due(as_of=moment)
        self.stdout.write(
            f"closed {report.closed} period(s); {report.skipped} already closed elsewhere"
        )
