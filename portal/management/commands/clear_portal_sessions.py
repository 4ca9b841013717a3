from django.core.management.base import BaseCommand

from portal import sign_in


class Command(BaseCommand):
    help = "Delete expired portal sessions and sign-in tokens (also run hourly by Celery beat)."

    def handle(self, *args, **options):
        tokens, sessions = sign_in.clear_expired()
        self.stdout.write(f"Deleted {sessions} expired sessions and {tokens} sign-in tokens.")
