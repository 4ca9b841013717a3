"""Invoice every subscription's metered charges that reached its spend threshold (what beat's
sweep runs)."""

from django.core.management.base import BaseCommand

from billing import thresholds


class Command(BaseCommand):
    help = "Issue the spend-threshold invoices due now (the periodic sweep, by hand)."

    def handle(self, *args, **options):
        issued = thresholds.check()
        self.stdout.write(f"issued {len(issued)} spend-threshold invoice(s)")
