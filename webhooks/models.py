"""Webhook endpoints, the events recorded for them (the outbox) and every delivery attempt."""

import secrets
import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models

from customers.models import Organization

# The event types Meterline sends (Polar's names), plus its documented extension.
EVENT_TYPES = (
    "order.created",
    "order.updated",
    "order.paid",
    "order.refunded",
    "refund.created",
    "refund.updated",
    "subscription.created",
    "subscription.updated",
    "subscription.canceled",
    "subscription.uncanceled",
    "subscription.cycled",
    "subscription.revoked",
    "subscription.past_due",
    "subscription.active",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.state_changed",
)
# Meterline's extension events (not in Polar's list: the endpoint shows them separately)
EXTENSION_EVENT_TYPES = ("customer.meter_threshold",)
ALL_EVENT_TYPES = EVENT_TYPES + EXTENSION_EVENT_TYPES
API_VERSION = "2026-10"


def new_secret() -> str:
    return f"polar_whs_{secrets.token_urlsafe(32)}"


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2048)
    name = models.CharField(max_length=256, blank=True, default="")
    format = models.CharField(max_length=16, default="raw", choices=[("raw", "raw")])
    secret = models.CharField(max_length=128, default=new_secret)
    events = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.TextField(blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "enabled"])]

    def __str__(self):
        return self.name or self.url


class EventStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retries exhausted
    SKIPPED = "skipped"  # the endpoint was disabled


class WebhookEvent(models.Model):
    """One event for one endpoint: written in the transaction of the change it reports (the
    outbox), then delivered by Celery until it succeeds or its retries run out. `body` is the
    exact JSON sent, so a redelivery signs the same bytes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="webhook_events"
    )
    type = models.CharField(max_length=64)
    body = models.TextField()
    status = models.CharField(
        max_length=16, choices=EventStatus.choices, default=EventStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # the attempt after which it gives up; a redelivery moves it (a new round of retries)
    final_attempt = models.PositiveIntegerField()
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_http_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_event_due",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["endpoint", "-created_at"]),
        ]

    def __str__(self):
        return f"{self.type} → {self.endpoint_id}"


class WebhookDelivery(models.Model):
    """One attempt to deliver an event: the delivery log."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveIntegerField()
    succeeded = models.BooleanField()
    http_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "attempt"], name="webhook_delivery_attempt")
        ]

    def __str__(self):
        return f"attempt {self.attempt} of {self.event_id}"


class PendingStateChange(models.Model):
    """A customer whose `customer.state_changed` is due at `due_at`: one row per customer, so the
    changes of a few seconds collapse into one event (the debounce)."""

    customer_id = models.UUIDField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    due_at = models.DateTimeField()

    def __str__(self):
        return f"{self.customer_id} at {self.due_at}"


class AlertMetric(models.TextChoices):
    UNITS = "units", "units consumed in the period"
    AMOUNT = "amount", "amount so far in the period (cents)"
    BALANCE = "balance", "credits left below the threshold (units)"


class AlertRule(models.Model):
    """Usage alert (Meterline extension): when a customer's usage of `meter` in the current
    billing period reaches `threshold`, fire once for that customer and period. A `balance`
    rule fires when the meter's credits left (credited − consumed, as the customer meter shows
    it) fall below `threshold` units: once per period and state of the credit ledger, so again
    only after new credits were granted (or the next period began) and it fell below again."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=256)
    meter = models.ForeignKey("metering.Meter", on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: every customer.",
    )
    metric = models.CharField(max_length=8, choices=AlertMetric.choices, default=AlertMetric.UNITS)
    threshold = models.DecimalField(max_digits=24, decimal_places=6)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "is_active"])]

    def __str__(self):
        return self.name


class AlertFiring(models.Model):
    """A rule crossed by a customer in one period. The unique constraint is what makes it fire
    once, also when two workers evaluate the same crossing at the same time."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="firings")
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    value = models.DecimalField(max_digits=24, decimal_places=6)
    # balance rules: the units granted to the customer on the meter so far (the ledger only grows,
    # so new credits make a new crossing possible); 0 for the others
    crossing = models.BigIntegerField(default=0)
    fired_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "customer", "period_start", "crossing"],
                name="alert_fires_once_per_crossing",
            )
        ]

    def __str__(self):
        return f"{self.rule} · {self.customer_id} · {self.period_start:%Y-%m-%d}"
