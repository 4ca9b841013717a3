"""Close every billing period due at --as-of (default now), catching up several if needed."""

from billing import cycles
from core.management.simulated_time import AsOfCommand


class Command(AsOfCommand):
    help = "Close due billing periods (end + BILLING_GRACE ≤ --as-of) and issue their invoices."

    def handle(self, *args, as_of=None, **options):
        moment = self.as_of(as_of)
        report = cycles.close_due(as_of=moment)
        self.stdout.write(
            f"closed {report.closed} period(s); {report.skipped} already closed elsewhere"
        )
