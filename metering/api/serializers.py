from rest_framework import serializers

from core.metadata import as_decimal
from customers.api.serializers import CustomerSerializer


def cost_amount_text(amount, exact: str | None = None) -> str:
    """`_cost.amount` as Polar returns it: a decimal string (polar-sdk's type for it). `exact`:
    the stored number's text, when the query read it (a float has only 17 digits)."""
    if isinstance(amount, str):
        return amount  # stored before amounts became numbers
    return exact if exact is not None else format(as_decimal(amount), "f")


class EventSerializer(serializers.Serializer):
    """Polar's `UserEvent` / system event output."""

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
    source = serializers.CharField()
    metadata = serializers.DictField()

    def to_representation(self, instance):
        data = super().to_representation(instance)
        cost = data["metadata"].get("_cost")
        if isinstance(cost, dict) and "amount" in cost:
            exact = getattr(instance, "cost_amount", None)
            data["metadata"]["_cost"] = {**cost, "amount": cost_amount_text(cost["amount"], exact)}
        return data

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
