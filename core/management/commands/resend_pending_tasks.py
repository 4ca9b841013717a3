from django.core.management.base import BaseCommand

from core.outbox import resend_pending


class Command(BaseCommand):
    help = "Send the enqueued tasks that are due again (broker was down, or a worker died)."

    def handle(self, *args, **options):
        self.stdout.write(f"{resend_pending()} sent")
