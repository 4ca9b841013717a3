from django.db.models import Q
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.metadata import as_decimal
from customers.api.serializers import CustomerSerializer
from metering.models import CorrectionAction, EventCorrection, EventSource


def cost_amount_text(amount, exact: str | None = None) -> str:
    """`_cost.amount` as Polar returns it: a decimal string (polar-sdk's type for it). `exact`:
    the stored number's text, when the query read it (a float has only 17 digits)."""
    if isinstance(amount, str):
        return amount  # stored before amounts became numbers
    return exact if exact is not None else format(as_decimal(amount), "f")


class EventCorrectionStateSerializer(serializers.Serializer):
    """How a canceled original was corrected (the event's `correction` extension)."""

    id = serializers.UUIDField()
    action = serializers.ChoiceField(choices=CorrectionAction.choices)
    reason = serializers.CharField()
    replacement_id = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()


class EventCorrections:
    """The corrections a page of events needs, read in one query: the correction of each
    canceled original, and which original each replacement replaces."""

    def __init__(self, events):
        self.of: dict = {}
        self.replaces: dict = {}
        canceled = [e.id for e in events if e.source == EventSource.CANCELED]
        # only user events can be replacements; system events never are
        users = [e.id for e in events if e.source == EventSource.USER]
        if not canceled and not users:
            return
        organizations = {e.organization_id for e in events}
        rows = EventCorrection.objects.filter(organization_id__in=organizations).filter(
            Q(event_id__in=canceled) | Q(replacement_id__in=users)
        )
        for row in rows.only("id", "event_id", "action", "reason", "replacement_id", "created_at"):
            self.of[row.event_id] = row
            if row.replacement_id is not None:
                self.replaces[row.replacement_id] = row.event_id


class EventListSerializer(serializers.ListSerializer):
    def to_representation(self, data):
        events = list(data)
        self._context = {**self._context, "corrections": EventCorrections(events)}
        return super().to_representation(events)


class EventSerializer(serializers.Serializer):
    """Polar's `UserEvent` / system event output."""

    class Meta:
        list_serializer_class = EventListSerializer

    id = serializers.UUIDField()
    timestamp = serializers.DateTimeField()
    organization_id = serializers.UUIDField()
    customer_id = serializers.UUIDField(allow_null=True)
    customer = CustomerSerializer(allow_null=True)
    external_customer_id = serializers.SerializerMethodField()
    member_id = serializers.SerializerMethodField()
    external_member_id = serializers.SerializerMethodField()
    child_count = serializers.IntegerField(default=0)
    # Not in Polar's output; extra fields are allowed and the idempotency key is useful to show.
    external_id = serializers.CharField(allow_null=True)
    parent_id = serializers.UUIDField(allow_null=True)
    label = serializers.CharField(source="name")
    name = serializers.CharField()
    # a canceled original goes out as "user": polar-sdk's events are "user" or "system" only;
    # `correction` tells them apart
    source = serializers.SerializerMethodField()
    metadata = serializers.DictField()
    # Meterline extensions (usage corrections): null on events never corrected
    correction = serializers.SerializerMethodField()
    replaces = serializers.SerializerMethodField()

    def to_representation(self, instance):
        if "corrections" not in self.context:
            self._context = {**self.context, "corrections": EventCorrections([instance])}
        data = super().to_representation(instance)
        cost = data["metadata"].get("_cost")
        if isinstance(cost, dict) and "amount" in cost:
            exact = getattr(instance, "cost_amount", None)
            data["metadata"]["_cost"] = {**cost, "amount": cost_amount_text(cost["amount"], exact)}
        return data

    # "user" or "system", a plain string as before (an enum here would take the name of the
    # catalog's `source` enum)
    @extend_schema_field(serializers.CharField())
    def get_source(self, obj) -> str:
        return EventSource.USER if obj.source == EventSource.CANCELED else obj.source

    @extend_schema_field(EventCorrectionStateSerializer(allow_null=True))
    def get_correction(self, obj):
        if obj.source != EventSource.CANCELED:
            return None
        row = self.context["corrections"].of.get(obj.id)
        return EventCorrectionStateSerializer(row).data if row is not None else None

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_replaces(self, obj) -> str | None:
        original = self.context["corrections"].replaces.get(obj.id)
        return str(original) if original is not None else None

    def get_external_customer_id(self, obj) -> str | None:
        if obj.external_customer_id is None and obj.customer is not None:
            return obj.customer.external_id
        return obj.external_customer_id

    def get_member_id(self, obj) -> str | None:
        return None

    def get_external_member_id(self, obj) -> str | None:
        return None


class EventCreateSerializer(serializers.Serializer):
    """Documents the ingest body for OpenAPI; validation itself is set-based (services)."""

    name = serializers.CharField(max_length=128)
    customer_id = serializers.UUIDField(required=False)
    external_customer_id = serializers.CharField(max_length=256, required=False)
    timestamp = serializers.DateTimeField(required=False)
    external_id = serializers.CharField(max_length=256, required=False, allow_null=True)
    parent_id = serializers.CharField(max_length=256, required=False, allow_null=True)
    metadata = serializers.DictField(required=False)


class EventsIngestSerializer(serializers.Serializer):
    events = EventCreateSerializer(many=True)


class EventsIngestResponseSerializer(serializers.Serializer):
    inserted = serializers.IntegerField()
    duplicates = serializers.IntegerField()


class EventNameSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField(source="name")
    source = serializers.CharField()
    occurrences = serializers.IntegerField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()


class CorrectionCreateSerializer(serializers.Serializer):
    """Documents one correction of the request; validation itself is the service's
    (metering.corrections)."""

    event_id = serializers.UUIDField(required=False, help_text="The event, or `external_id`")
    external_id = serializers.CharField(
        max_length=256, required=False, help_text="The event's external id, or `event_id`"
    )
    action = serializers.ChoiceField(choices=CorrectionAction.choices)
    reason = serializers.CharField(max_length=500)
    name = serializers.CharField(
        max_length=128, required=False, help_text="replace only: the corrected name"
    )
    metadata = serializers.DictField(
        required=False, help_text="replace only: the corrected metadata (in full)"
    )


class CorrectionsRequestSerializer(serializers.Serializer):
    corrections = CorrectionCreateSerializer(many=True)


class EventCorrectionSerializer(serializers.Serializer):
    """A usage correction (Meterline extension)."""

    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    event_id = serializers.UUIDField()
    external_id = serializers.SerializerMethodField()
    action = serializers.ChoiceField(choices=CorrectionAction.choices)
    reason = serializers.CharField()
    replacement_id = serializers.UUIDField(allow_null=True)
    customer_id = serializers.UUIDField(allow_null=True)
    event_timestamp = serializers.DateTimeField()
    actor = serializers.CharField()

    def get_external_id(self, obj) -> str | None:
        return (obj.original or {}).get("external_id")


class CorrectionsResponseSerializer(serializers.Serializer):
    corrections = EventCorrectionSerializer(many=True)
