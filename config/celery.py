import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# every task's delay_on_commit goes through the database outbox (core/outbox.py)
app = Celery("meterline", task_cls="core.outbox:DurableTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
