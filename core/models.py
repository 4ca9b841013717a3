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


class IdempotencyKey(models.Model):
    """A request sent with an `Idempotency-Key` header to an endpoint that adopted it (see
    core.api.idempotency): what was asked (a hash of the request) and what was answered, so a
    retry with the same key gets the first answer instead of acting twice. The row is inserted
    in the transaction that acts, so a concurrent retry waits on its unique key until that
    transaction ends."""

    # core sits below customers: the organization's id without a foreign key
    organization_id = models.UUIDField()
    # the operation, e.g. "customers_buy_credit_pack": one key may be used on several endpoints
    endpoint = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    # set before the inserting transaction commits: a committed row always has its answer
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization_id", "endpoint", "key"], name="idempotency_key_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.key}"
