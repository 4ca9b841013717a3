from celery import shared_task
from django.core.management import call_command

from core.outbox import resend_pending


@shared_task
def clear_expired_sessions():
    call_command("clearsessions")


@shared_task
def resend_pending_tasks():
    resend_pending()
