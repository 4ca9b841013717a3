"""Tasks that survive a broker outage and a killed worker.

`task.delay_on_commit(...)` (the way the apps enqueue work) records the task in the database in
the caller's transaction, then publishes it after the commit. The record is deleted when a
worker finishes the task. So:

- broker down at commit: the publish fails, the request still succeeds (ingest and the API do
  not depend on the broker), and the record is sent again later;
- worker killed mid-task (or the process killed between the commit and the publish): the
  record outlives the lease and is sent again.

`resend_pending()` sends what is due; beat runs it every OUTBOX_RESEND_INTERVAL_SECONDS (and a
worker at start-up); `manage.py resend_pending_tasks` runs it by hand. A task sent twice must be
harmless — the apps' tasks are idempotent (a backfill resumes from its committed cursor).
Arguments are stored as JSON, so they must be JSON values (ids and times as strings), as
Celery's JSON serializer wants them anyway.
"""

import logging
import uuid
from datetime import timedelta
from functools import partial

from celery import Task, current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.models import PendingTask

logger = logging.getLogger(__name__)


class DurableTask(Task):
    """The Celery task class of the project (config/celery.py)."""

    def delay_on_commit(self, *args, **kwargs):
        return enqueue_on_commit(self.name, list(args), kwargs)


def enqueue_on_commit(name: str, args: list, kwargs: dict) -> uuid.UUID:
    # Recorded as already sent once, with its lease: the publish after the commit then needs no
    # second write (a second commit, i.e. WAL flush, per enqueue on hot paths such as the cycle
    # close). If the process dies between the commit and the publish, the record is resent when
    # the lease runs out.
    now = timezone.now()
    pending = PendingTask.objects.create(
        id=uuid.uuid4(),
        name=name,
        args=args,
        kwargs=kwargs,
        attempts=1,
        next_attempt_at=now + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS),
    )
    transaction.on_commit(partial(publish, pending.pk, name, args, kwargs))
    return pending.pk


def enqueue_many_on_commit(name: str, arg_lists: list[list]) -> None:
    """enqueue_on_commit for many calls of one task, recorded in one insert."""
    lease = timezone.now() + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS)
    pending = PendingTask.objects.bulk_create(
        PendingTask(
            id=uuid.uuid4(), name=name, args=args, kwargs={}, attempts=1, next_attempt_at=lease
        )
        for args in arg_lists
    )
    for task in pending:
        transaction.on_commit(partial(publish, task.pk, name, task.args, {}))


def publish(task_id, name: str, args: list, kwargs: dict) -> bool:
    """Send one recorded task; its record already counts this attempt and holds its lease."""
    try:
        current_app.tasks[name].apply_async(args=args, kwargs=kwargs, task_id=str(task_id))
    except Exception as exc:  # broker down: kept for resend_pending
        logger.warning("task %s %s not sent (%s); it will be resent", name, task_id, exc)
        PendingTask.objects.filter(pk=task_id).update(
            next_attempt_at=timezone.now()
            + timedelta(seconds=settings.OUTBOX_RESEND_INTERVAL_SECONDS),
            attempts=F("attempts") - 1,
            last_error=f"publish: {type(exc).__name__}: {exc}"[:2000],
        )
        return False
    return True


def resend_pending() -> int:
    """Send the tasks that are due (never sent, failed to send, or not finished in time)."""
    sent = 0
    due = PendingTask.objects.filter(
        next_attempt_at__lte=timezone.now(), attempts__lt=settings.OUTBOX_MAX_ATTEMPTS
    ).order_by("created_at")
    for pending in due[:1000]:
        PendingTask.objects.filter(pk=pending.pk).update(
            next_attempt_at=timezone.now() + timedelta(seconds=settings.OUTBOX_LEASE_SECONDS),
            attempts=F("attempts") + 1,
        )
        sent += publish(pending.pk, pending.name, pending.args, pending.kwargs)
    return sent


def task_finished(task_id) -> None:
    PendingTask.objects.filter(pk=task_id).delete()


def task_failed(task_id, exc) -> None:
    PendingTask.objects.filter(pk=task_id).update(last_error=f"{type(exc).__name__}: {exc}"[:2000])
