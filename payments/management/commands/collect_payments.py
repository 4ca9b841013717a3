"""Collect what is due at --as-of (default now): dunning retries, reconciliation of payments a
crash left pending, the final actions, refunds left pending."""

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from payments import collection, refunds


class Command(BaseCommand):
    help = "Run due payment attempts and dunning retries, reconcile stale pending payments."

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
        report = collection.collect_due(moment)
        refunds_settled = refunds.reconcile_pending(moment)
        self.stdout.write(
            f"attempted {report.attempted} payment(s): {report.succeeded} succeeded, "
            f"{report.failed} failed; reconciled {report.reconciled}; "
            f"revoked {report.revoked} subscription(s)"
        )
        self.stdout.write(f"reconciled {refunds_settled} pending refund(s)")
