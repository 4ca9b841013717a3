from django.db import models


class RateCounter(models.Model):
    """One rate-limit window's request count (see core.ratecounters)."""

    key = models.CharField(max_length=250, primary_key=True)
    count = models.BigIntegerField()
    expires = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


class PendingTask(models.Model):
    """A task enqueued with `delay_on_commit`, kept until a worker has finished it (see
    core.outbox). Its id is the Celery task id."""

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    # when to (re)send it: soon after a failed publish, after the lease once sent
    next_attempt_at = models.DateTimeField(db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"{self.name} {self.id}"
