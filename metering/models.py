import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.functions import RandomUUID
from django.db import models
from psycopg.types.json import Jsonb

from metering import jsonio


class EventSource(models.TextChoices):
    USER = "user", "User"
    SYSTEM = "system", "System"
    # A user event cancelled or replaced by a usage correction (EventCorrection): kept, never
    # deleted, and out of every meter — usage reads take `source = 'user'` only.
    CANCELED = "canceled", "Canceled"


class Event(models.Model):
    """An immutable record that something happened. Only the links (customer, parent) are ever
    filled in after insertion, when the customer or the parent arrives later."""

    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False
    )
    # No single-column FK indexes on this table: each is covered by a composite or partial index
    # below, and every extra index costs every insert.
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    name = models.CharField(max_length=128)
    source = models.CharField(max_length=8, choices=EventSource.choices, default=EventSource.USER)
    timestamp = models.DateTimeField()
    ingested_at = models.DateTimeField()
    # The transaction that made this event its customer's usage: its ingest, or the linking of
    # a customer that appeared later. Billing's read boundaries are committed snapshots, and an
    # event counts as arrived after a boundary exactly when this transaction is not visible in
    # it (metering.queries). Null on events stored before it was recorded.
    arrival_txid = models.BigIntegerField(null=True, blank=True, editable=False)
    customer = models.ForeignKey(
        "customers.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="events",
        db_index=False,
    )
    external_customer_id = models.CharField(max_length=256, null=True, blank=True)
    external_id = models.CharField(max_length=256, null=True, blank=True)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        db_index=False,
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
            # unfiltered newest-first lists (admin) without a sort of the whole table
            models.Index(fields=["-timestamp"], name="event_ts"),
            models.Index(fields=["customer", "-timestamp"], name="event_customer_ts"),
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
            # Credits and resets of a customer (customer meter windows) without scanning usage.
            models.Index(
                fields=["customer", "name", "timestamp"],
                name="event_system_customer",
                condition=models.Q(source="system"),
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


class MeterUnit(models.TextChoices):
    SCALAR = "scalar", "Scalar"
    TOKEN = "token", "Token"
    CUSTOM = "custom", "Custom"


class MeterState(models.TextChoices):
    # Rollups are complete and maintained by ingestion: reads use them.
    READY = "ready", "Ready"
    # A backfill is (re)building the rollups: reads compute from raw events meanwhile.
    BACKFILLING = "backfilling", "Backfilling"


class Meter(models.Model):
    """A filter over events plus an aggregation (docs/meters.md)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="meters"
    )
    name = models.CharField(max_length=256)
    filter = models.JSONField(default=dict)
    aggregation = models.JSONField(default=dict)
    unit = models.CharField(max_length=16, choices=MeterUnit.choices, default=MeterUnit.SCALAR)
    custom_label = models.CharField(max_length=64, null=True, blank=True)
    custom_multiplier = models.BigIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(null=True, blank=True)
    # --- rollup lifecycle (see docs/meters.md, "Backfill") ---
    state = models.CharField(max_length=16, choices=MeterState.choices, default=MeterState.READY)
    # Bumped whenever filter/aggregation change: a running backfill of an older definition stops.
    definition_version = models.PositiveIntegerField(default=1)
    # Customers with id <= backfill_cursor are rolled up (by the backfill, then by ingestion);
    # NULL while backfilling means none yet.
    backfill_cursor = models.UUIDField(null=True, blank=True)
    backfill_events_total = models.BigIntegerField(default=0)
    backfill_events_done = models.BigIntegerField(default=0)
    backfill_started_at = models.DateTimeField(null=True, blank=True)
    backfill_finished_at = models.DateTimeField(null=True, blank=True)
    backfill_error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["organization", "name"], name="meter_org_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def backfill_progress(self) -> float:
        if self.state == MeterState.READY:
            return 1.0
        if not self.backfill_events_total:
            return 0.0
        return min(1.0, self.backfill_events_done / self.backfill_events_total)


class CustomerMeter(models.Model):
    """One per (customer, meter), created when the customer first has a matching event or a
    credit. Numbers (consumed, credited, balance) are computed from rollups on read."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="customer_meters"
    )
    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="customer_meters")
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "meter"], name="customer_meter_unique")
        ]
        indexes = [models.Index(fields=["meter", "customer"], name="customer_meter_meter")]
        permissions = [
            ("grant_credits", "Can grant or revoke credits on customer meters"),
            ("reset_customer_meter", "Can reset customer meters"),
        ]

    def __str__(self) -> str:
        return f"{self.customer} / {self.meter}"


class NumericField(models.Field):
    """Unconstrained PostgreSQL `numeric`: exact, any scale (Decimal in Python)."""

    def db_type(self, connection) -> str:
        return "numeric"

    def get_internal_type(self) -> str:
        return "NumericField"


class RollupKey(models.Model):
    """The (meter, customer, hour) key shared by the rollup tables."""

    # No FK constraints: checking them would cost the ingest path a lookup per row; rows are
    # deleted with their meter by services (rebuild) and customers are only soft-deleted.
    meter = models.ForeignKey(
        Meter, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False, db_index=False
    )
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    bucket = models.DateTimeField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.meter_id} / {self.customer_id} @ {self.bucket:%Y-%m-%d %H:00}"


class MeterRollup(RollupKey):
    """Hourly partial aggregates per (meter, customer) as readers see them: a view summing the
    compact hourly rows and the deltas not compacted yet (`metering.rollups` has the storage).
    `numeric_*` only cover events whose aggregation property is a JSON number."""

    pk = models.CompositePrimaryKey("meter", "customer", "bucket")
    event_count = models.BigIntegerField(default=0)
    numeric_count = models.BigIntegerField(default=0)
    numeric_sum = NumericField(null=True)
    numeric_min = NumericField(null=True)
    numeric_max = NumericField(null=True)

    class Meta:
        managed = False  # a view (migration 0005)


class MeterUniqueRollup(RollupKey):
    """Distinct values of a `unique` meter's property per (meter, customer, hour): a view over
    the compact hourly sets and the pending deltas. The value key encodes the type:
    `s:<text>`, `n:<normalized numeric>`, `b:true|false`."""

    pk = models.CompositePrimaryKey("meter", "customer", "bucket", "value_key")
    value_key = models.TextField()

    class Meta:
        managed = False  # a view (migration 0005)

    def __str__(self) -> str:
        return (
            f"{self.meter_id} / {self.customer_id} @ {self.bucket:%Y-%m-%d %H:00}: {self.value_key}"
        )


# --- rollup storage (see metering.rollups) ----------------------------------------------------


class Partials(models.Model):
    event_count = models.BigIntegerField(default=0)
    numeric_count = models.BigIntegerField(default=0)
    numeric_sum = NumericField(null=True)
    numeric_min = NumericField(null=True)
    numeric_max = NumericField(null=True)

    class Meta:
        abstract = True


class RollupHour(RollupKey, Partials):
    """Compacted hourly partials: written by compaction and backfills, never by ingestion."""

    pk = models.CompositePrimaryKey("meter", "customer", "bucket")

    class Meta:
        db_table = "metering_meterrollup_hour"


class RollupDay(RollupKey, Partials):
    """The same partials per UTC day (`bucket` is the day's midnight): whole-history and
    per-day reads touch a few dozen rows whatever the history length."""

    pk = models.CompositePrimaryKey("meter", "customer", "bucket")

    class Meta:
        db_table = "metering_meterrollup_day"


class RollupDelta(RollupKey, Partials):
    """Append-only partials of one ingest transaction (`txid`) per (meter, customer, hour):
    concurrent ingests never write the same row, so they never wait for each other. Folded
    into the compact tiers by compaction; readers add the pending ones. Stored one row per
    (customer, hour, transaction) with every meter's partials as arrays
    (`metering_rollup_delta`); this is the view that unnests them (migration 0010)."""

    pk = models.CompositePrimaryKey("meter", "customer", "bucket", "txid")
    txid = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "metering_meterrollup_delta"


class UniqueRollupHour(RollupKey):
    pk = models.CompositePrimaryKey("meter", "customer", "bucket", "value_key")
    value_key = models.TextField()

    class Meta:
        db_table = "metering_meteruniquerollup_hour"


class UniqueRollupDay(RollupKey):
    pk = models.CompositePrimaryKey("meter", "customer", "bucket", "value_key")
    value_key = models.TextField()

    class Meta:
        db_table = "metering_meteruniquerollup_day"


class UniqueRollupDelta(RollupKey):
    pk = models.CompositePrimaryKey("meter", "customer", "bucket", "txid", "value_key")
    txid = models.BigIntegerField()
    value_key = models.TextField()

    class Meta:
        db_table = "metering_meteruniquerollup_delta"


# --- the ClickHouse event store's PostgreSQL side (metering.stores.clickhouse) ---------------


class EventKey(models.Model):
    """An idempotency key claimed by an ingest when events live in ClickHouse: written in the
    ingest transaction (`ON CONFLICT DO NOTHING RETURNING`), so `{inserted, duplicates}` stays
    exact forever while the events themselves are in another database."""

    pk = models.CompositePrimaryKey("organization", "external_id")
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    external_id = models.CharField(max_length=256)
    event_id = models.UUIDField()

    def __str__(self) -> str:
        return self.external_id


class EventBatch(models.Model):
    """The outbox of the ClickHouse store: one row per accepted batch, written in the ingest
    transaction with the rows to insert. After the commit the batch goes to ClickHouse with
    its id as deduplication token and is marked delivered; the relay resends what is not.
    Undelivered batches bound what a consistent read sees (the watermark)."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    txid = models.BigIntegerField()  # the ingest transaction: the events' arrival
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    event_count = models.PositiveIntegerField()
    first_event_id = models.UUIDField()
    customer_ids = ArrayField(models.UUIDField(), default=list, blank=True)
    rows = models.TextField(null=True, blank=True)  # JSON, cleared once delivered

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="eventbatch_undelivered",
                condition=models.Q(delivered_at__isnull=True),
            ),
            models.Index(fields=["first_event_id"], name="eventbatch_first_event"),
            models.Index(fields=["created_at"], name="eventbatch_created"),
        ]

    def __str__(self) -> str:
        return f"batch {self.id} ({self.event_count} events)"


class CustomerLink(models.Model):
    """When events live in ClickHouse, linking never rewrites them: events sent with an external
    customer id before that customer existed stay unlinked there, and this row makes them the
    customer's usage from the linking transaction (`txid`: their arrival for billing) on. The
    first customer to hold an external id keeps it."""

    customer = models.OneToOneField(
        "customers.Customer", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    external_customer_id = models.CharField(max_length=256)
    txid = models.BigIntegerField()
    linked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "external_customer_id"], name="customer_link_unique"
            )
        ]

    def __str__(self) -> str:
        return self.external_customer_id


class ExactJSONField(models.JSONField):
    """jsonb whose numbers stay exact: Decimals go in as the numbers they spell and come back as
    Decimals (metering.jsonio), where the standard field would read floats."""

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        return Jsonb(value, dumps=jsonio.dumps)

    def from_db_value(self, value, expression, connection):
        if value is None or not isinstance(value, str | bytes):
            return value
        return jsonio.loads(value)


class CorrectionAction(models.TextChoices):
    CANCEL = "cancel", "Cancel"
    REPLACE = "replace", "Replace"


class EventCorrection(models.Model):
    """A usage correction: one user event cancelled, or replaced by a new event with the same
    timestamp and customer (metering.corrections). The original stays stored, marked
    `canceled`; this row keeps what it was, why it changed and who changed it. Billing reads
    these rows to put the difference on the next invoice when the event's period is invoiced
    already: a correction is billed by the first close whose read boundary sees `txid`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # no foreign keys to events: with the ClickHouse store user events aren't in PostgreSQL
    event_id = models.UUIDField()
    action = models.CharField(max_length=8, choices=CorrectionAction.choices)
    reason = models.CharField(max_length=500)
    replacement_id = models.UUIDField(null=True, blank=True)
    customer = models.ForeignKey(
        "customers.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="event_corrections",
    )
    # what the corrected event was (and the replacement is): its timestamp, arrival and content
    event_timestamp = models.DateTimeField()
    event_arrival_txid = models.BigIntegerField(null=True, blank=True)
    original = ExactJSONField()  # name, external_id, external_customer_id, metadata
    replacement = ExactJSONField(null=True, blank=True)  # name, metadata
    # the correcting transaction (billing's read boundaries are snapshots of these ids)
    txid = models.BigIntegerField()
    actor = models.CharField(max_length=200)  # "staff:<username>" or "api:<token name>"
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # an event is corrected once; its replacement can be corrected in turn
            models.UniqueConstraint(
                fields=["organization", "event_id"], name="event_corrected_once"
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "created_at"], name="correction_customer"),
            # the admin's and the API's newest-first lists
            models.Index(fields=["organization", "-created_at"], name="correction_org_created"),
            # a replacement's page and the API's `replaces`: its correction
            models.Index(
                fields=["organization", "replacement_id"],
                name="correction_replacement",
                condition=models.Q(replacement_id__isnull=False),
            ),
        ]
        permissions = [("correct_event", "Can cancel or replace events (usage corrections)")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.event_id}"
