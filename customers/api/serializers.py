from rest_framework import serializers

from core.api.serializers import StrictSerializer, ValidatedJSONField
from core.metadata import json_scalar, validate_metadata
from customers.models import Customer

COUNTRY_CODE_LENGTH = 2


class MetadataField(ValidatedJSONField):
    """Flat metadata (≤50 keys, scalar values) validated with the same rule as events."""

    validator = staticmethod(validate_metadata)

    def to_internal_value(self, data):
        return {key: json_scalar(value) for key, value in super().to_internal_value(data).items()}


class AddressSerializer(serializers.Serializer):
    line1 = serializers.CharField(max_length=256, required=False, allow_null=True, allow_blank=True)
    line2 = serializers.CharField(max_length=256, required=False, allow_null=True, allow_blank=True)
    postal_code = serializers.CharField(
        max_length=32, required=False, allow_null=True, allow_blank=True
    )
    city = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)
    state = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)
    country = serializers.RegexField(r"^[A-Z]{2}$", max_length=COUNTRY_CODE_LENGTH)


class CustomerWriteFields(StrictSerializer):
    ignored_fields = ("organization_id", "owner", "type")

    metadata = MetadataField(required=False)
    external_id = serializers.CharField(max_length=256, required=False, allow_null=True)
    name = serializers.CharField(max_length=256, required=False, allow_null=True, allow_blank=True)
    billing_name = serializers.CharField(max_length=256, required=False, allow_null=True)
    billing_address = AddressSerializer(required=False, allow_null=True)
    tax_id = serializers.CharField(max_length=64, required=False, allow_null=True)
    locale = serializers.RegexField(
        r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", max_length=16, required=False, allow_null=True
    )

    def to_internal_value(self, data):
        if isinstance(data, dict) and data.get("type") not in (None, "individual"):
            raise serializers.ValidationError(
                {"type": ["Only individual customers are supported."]}
            )
        values = super().to_internal_value(data)
        if "tax_id" in values:
            values["tax_id"] = [values["tax_id"], None] if values["tax_id"] else None
        if values.get("billing_address") is not None:
            values["billing_address"] = dict(values["billing_address"])
        return values


class CustomerCreateSerializer(CustomerWriteFields):
    email = serializers.EmailField(max_length=320)


class CustomerUpdateSerializer(CustomerWriteFields):
    email = serializers.EmailField(max_length=320, required=False, allow_null=True)


class CustomerSerializer(serializers.Serializer):
    """Polar's `CustomerIndividual` output."""

    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    metadata = serializers.DictField()
    external_id = serializers.CharField(allow_null=True)
    email = serializers.CharField()
    email_verified = serializers.BooleanField()
    type = serializers.SerializerMethodField()
    name = serializers.CharField(allow_null=True)
    billing_name = serializers.SerializerMethodField()
    billing_address = AddressSerializer(allow_null=True)
    tax_id = serializers.ListField(allow_null=True, child=serializers.CharField(allow_null=True))
    locale = serializers.CharField(allow_null=True)
    organization_id = serializers.UUIDField()
    default_payment_method_id = serializers.SerializerMethodField()
    deleted_at = serializers.DateTimeField(allow_null=True)
    first_user_event_at = serializers.DateTimeField(allow_null=True)
    avatar_url = serializers.SerializerMethodField()

    def get_type(self, obj) -> str:
        return "individual"

    def get_billing_name(self, obj) -> str | None:
        return obj.billing_name or obj.name

    def get_default_payment_method_id(self, obj) -> str | None:
        return None

    def get_avatar_url(self, obj) -> str | None:
        return None


class CustomerStateSerializer(CustomerSerializer):
    """Polar's `CustomerState`: the customer and the sections the apps above register
    (`customers.api.state`): metering's `active_meters`, billing's `active_subscriptions` and
    `granted_benefits` — their items are documented by those apps' own responses — and
    Meterline's `balances` (billing's customer balance per currency, in minor units)."""

    active_meters = serializers.ListField(child=serializers.DictField())
    active_subscriptions = serializers.ListField(child=serializers.DictField())
    granted_benefits = serializers.ListField(child=serializers.DictField())
    balances = serializers.ListField(child=serializers.DictField())


def customer_payload(customer: Customer) -> dict:
    return CustomerSerializer(customer).data
