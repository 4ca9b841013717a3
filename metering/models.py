import uuid

from django.contrib.postgres.functions import RandomUUID
from django.db import models


class EventSource(models.TextChoices):
    USER = "user", "User"
    SYSTEM = "system", "System"


class Event(models.Model):
    """An immutable record that something happened. Only the links (customer, parent) are ever
    filled in after insertion, when the customer or the parent arrives later."""

    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False
    )
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="+"
    )
    name = models.CharField(max_length=128)
    source = models.CharField(max_length=8, choices=EventSource.choices, default=EventSource.USER)
    timestamp = models.DateTimeField()
    ingested_at = models.DateTimeField()
    customer = models.ForeignKey(
        "customers.Customer", null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    external_customer_id = models.CharField(max_length=256, null=True, blank=True)
    external_id = models.CharField(max_length=256, null=True, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    # What the sender named as parent (an event id or external id), kept until it resolves.
    parent_reference = models.CharField(max_length=256, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            # The idempotency key: concurrent requests with the same external_id store it once.
            models.UniqueConstraint(
                fields=["organization", "external_id"],
                condition=models.Q(external_id__isnull=False),
                name="event_external_id_unique_per_org",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-timestamp"], name="event_org_ts"),
            models.Index(fields=["customer", "-timestamp"], name="event_customer_ts"),
            models.Index(
                fields=["organization", "external_customer_id", "-timestamp"],
                name="event_org_extcust_ts",
            ),
            models.Index(fields=["organization", "name", "-timestamp"], name="event_org_name_ts"),
            models.Index(
                fields=["parent"], name="event_parent", condition=models.Q(parent__isnull=False)
            ),
            models.Index(
                fields=["organization", "parent_reference"],
                name="event_unresolved_parent",
                condition=models.Q(parent__isnull=True, parent_reference__isnull=False),
            ),
            models.Index(
                fields=["organization", "external_customer_id"],
                name="event_unlinked_customer",
                condition=models.Q(customer__isnull=True, external_customer_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"


class EventName(models.Model):
    """Distinct event names per organization, maintained by ingestion (the names endpoint would
    otherwise GROUP BY the whole events table)."""

    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.CASCADE, related_name="+"
    )
    name = models.CharField(max_length=128)
    source = models.CharField(max_length=8, choices=EventSource.choices)
    occurrences = models.BigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name", "source"], name="event_name_unique"
            )
        ]

    def __str__(self) -> str:
        return self.name
