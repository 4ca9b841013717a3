"""The periodic jobs. Each one is also a manage.py command a human can run."""

import json

from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

# name -> (task path, every N seconds); apps add theirs in AppConfig.ready()
SCHEDULES: dict[str, tuple[str, int]] = {
    "clear expired sessions": ("core.tasks.clear_expired_sessions", 24 * 3600),
    "clear expired portal sessions": ("portal.tasks.clear_expired_portal_sessions", 3600),
}


def schedules() -> dict[str, tuple[str, int]]:
    """Every periodic job, with the intervals that come from settings read now."""
    return {
        **SCHEDULES,
        "resend pending tasks": (
            "core.tasks.resend_pending_tasks",
            settings.OUTBOX_RESEND_INTERVAL_SECONDS,
        ),
    }


def ensure_schedules() -> int:
    created = 0
    for name, (task, seconds) in schedules().items():
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        _, was_created = PeriodicTask.objects.update_or_create(
            name=name, defaults={"task": task, "interval": interval, "kwargs": json.dumps({})}
        )
        created += was_created
    return created
