"""Commands that run what is due at an instant: `--as-of` simulates time (tests, catching up)."""

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError


class AsOfCommand(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument(
            "--as-of",
            help="ISO 8601 instant with offset (default: now). In the future it simulates time.",
        )

    def as_of(self, value: str | None) -> datetime | None:
        if not value:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise CommandError(f"--as-of: not an ISO 8601 datetime: {value!r}")
        if moment.tzinfo is None:
            raise CommandError("--as-of needs a UTC offset (e.g. Z or +02:00)")
        return moment
