"""Polar's Meter / MeterQuantities / CustomerMeter shapes: the write serializers validate the
bodies (every problem at once, with Polar's locations) and document them in OpenAPI; the read
serializers document the output."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
    ValidatedJSONField,
)
from core.metadata import validate_metadata
from customers.api.serializers import CustomerSerializer
from metering import filters
from metering.filters import AGGREGATION_FUNCS, CONJUNCTIONS, OPERATORS
from metering.models import MeterUnit

MAX_NAME = 256
MAX_LABEL = 64
MAX_MULTIPLIER = 2**63 - 1

FILTER_SCHEMA = {
    "type": "object",
    "required": ["conjunction", "clauses"],
    "properties": {
        "conjunction": {"type": "string", "enum": list(CONJUNCTIONS)},
        "clauses": {
            "type": "array",
            "maxItems": 100,
            "items": {
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["property", "operator", "value"],
                        "properties": {
                            "property": {"type": "string", "minLength": 1, "maxLength": 256},
                            "operator": {"type": "string", "enum": list(OPERATORS)},
                            "value": {
                                "anyOf": [
                                    {"type": "string", "maxLength": 1000},
                                    {"type": "integer"},
                                    {"type": "number"},
                                    {"type": "boolean"},
                                ]
                            },
                        },
                    },
                    {"type": "object", "description": "A nested filter (same shape)."},
                ]
            },
        },
    },
}

AGGREGATION_SCHEMA = {
    "type": "object",
    "required": ["func"],
    "properties": {
        "func": {"type": "string", "enum": list(AGGREGATION_FUNCS)},
        "property": {"type": "string", "minLength": 1, "maxLength": 256},
    },
}


@extend_schema_field(FILTER_SCHEMA)
class FilterField(ValidatedJSONField):
    validator = staticmethod(filters.validate_filter)


@extend_schema_field(AGGREGATION_SCHEMA)
class AggregationField(ValidatedJSONField):
    validator = staticmethod(filters.validate_aggregation)


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                {"type": "string"},
                {"type": "integer"},
                {"type": "number"},
                {"type": "boolean"},
            ]
        },
    }
)
class MetadataOutField(serializers.JSONField):
    pass


class MetadataInField(MetadataOutField, ValidatedJSONField):
    validator = staticmethod(validate_metadata)


class MeterSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    organization_id = serializers.UUIDField()
    name = serializers.CharField()
    unit = serializers.ChoiceField(choices=MeterUnit.choices)
    custom_label = serializers.CharField(allow_null=True)
    custom_multiplier = serializers.IntegerField(allow_null=True)
    filter = FilterField()
    aggregation = AggregationField()
    metadata = MetadataOutField()
    archived_at = serializers.DateTimeField(allow_null=True)
    # Meterline extras (allowed by the client): rollup lifecycle.
    state = serializers.CharField()
    backfill_progress = serializers.FloatField()


class MeterWriteSerializer(StrictSerializer):
    name = StrictCharField(min_length=3, max_length=MAX_NAME, trim_whitespace=False)
    filter = FilterField()
    aggregation = AggregationField()
    unit = serializers.ChoiceField(choices=MeterUnit.choices, required=False)
    custom_label = StrictCharField(
        min_length=1, max_length=MAX_LABEL, required=False, allow_null=True
    )
    custom_multiplier = StrictIntegerField(
        min_value=1, max_value=MAX_MULTIPLIER, required=False, allow_null=True
    )
    metadata = MetadataInField(required=False)

    def validate_name(self, value: str) -> str:
        if len(value.strip()) < 3:
            raise serializers.ValidationError(
                "Name must have at least 3 characters besides spaces", code="string_too_short"
            )
        return value


class MeterCreateSerializer(MeterWriteSerializer):
    def validate(self, attrs):
        if attrs.get("unit") == MeterUnit.CUSTOM and not attrs.get("custom_label"):
            raise serializers.ValidationError(
                {"custom_label": ["custom_label is required when unit is 'custom'"]}, code="missing"
            )
        return attrs


class MeterUpdateSerializer(MeterWriteSerializer):
    """Every field optional; `null` leaves a field as it is (except `custom_label`, which it
    clears)."""

    is_archived = StrictBooleanField(required=False, allow_null=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False
            field.allow_null = True

    def validate(self, attrs):
        return {k: v for k, v in attrs.items() if v is not None or k == "custom_label"}


class MeterQuantitySerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    quantity = serializers.FloatField()


class MeterQuantitiesSerializer(serializers.Serializer):
    quantities = MeterQuantitySerializer(many=True)
    total = serializers.FloatField()


class CustomerMeterSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    customer_id = serializers.UUIDField()
    meter_id = serializers.UUIDField()
    consumed_units = serializers.FloatField()
    credited_units = serializers.IntegerField()
    balance = serializers.FloatField()
    customer = CustomerSerializer()
    meter = MeterSerializer()


def meter_payload(meter) -> dict:
    return MeterSerializer(
        {
            "id": meter.pk,
            "created_at": meter.created_at,
            "modified_at": meter.modified_at,
            "organization_id": meter.organization_id,
            "name": meter.name,
            "unit": meter.unit,
            "custom_label": meter.custom_label,
            "custom_multiplier": meter.custom_multiplier,
            "filter": meter.filter,
            "aggregation": meter.aggregation,
            "metadata": meter.metadata,
            "archived_at": meter.archived_at,
            "state": meter.state,
            "backfill_progress": meter.backfill_progress,
        }
    ).data


def customer_meter_payload(customer_meter, numbers) -> dict:
    return {
        "id": str(customer_meter.pk),
        "created_at": serializers.DateTimeField().to_representation(customer_meter.created_at),
        "modified_at": serializers.DateTimeField().to_representation(customer_meter.modified_at)
        if customer_meter.modified_at
        else None,
        "customer_id": str(customer_meter.customer_id),
        "meter_id": str(customer_meter.meter_id),
        "consumed_units": float(numbers.consumed_units),
        "credited_units": numbers.credited_units,
        "balance": float(numbers.balance),
        "customer": CustomerSerializer(customer_meter.customer).data,
        "meter": meter_payload(customer_meter.meter),
    }
