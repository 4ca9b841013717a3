"""Collect what is due at --as-of (default now): dunning retries, reconciliation of payments a
crash left pending, the final actions, refunds left pending."""

from core.management.simulated_time import AsOfCommand
from payments import collection, refunds


class Command(AsOfCommand):
    help = "Run due payment attempts and dunning retries, reconcile stale pending payments."

    def handle(self, *args, as_of=None, **options):
        moment = self.as_of(as_of)
        report = collection.collect_due(moment)
        refunds_settled = refunds.reconcile_pending(moment)
        self.stdout.write(
            f"attempted {report.attempted} payment(s): {report.succeeded} succeeded, "
            f"{report.failed} failed; reconciled {report.reconciled}; "
            f"revoked {report.revoked} subscription(s)"
        )
        self.stdout.write(f"reconciled {refunds_settled} pending refund(s)")
