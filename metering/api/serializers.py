from rest_framework import serializers

from customers.api.serializers import CustomerSerializer


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
