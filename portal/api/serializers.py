from rest_framework import serializers

from customers.api.serializers import CustomerSerializer, StrictSerializer


class CustomerSessionCreateSerializer(StrictSerializer):
    """Polar's `CustomerSessionCustomerIDCreate | CustomerSessionCustomerExternalIDCreate`."""

    customer_id = serializers.UUIDField(required=False)
    external_customer_id = serializers.CharField(max_length=256, required=False)
    return_url = serializers.URLField(max_length=2048, required=False, allow_null=True)
    # Meterline has no members: accepted only when absent or null.
    member_id = serializers.UUIDField(required=False, allow_null=True)
    external_member_id = serializers.CharField(max_length=256, required=False, allow_null=True)

    def validate(self, attrs):
        errors = {}
        for field in ("member_id", "external_member_id"):
            if attrs.get(field) is not None:
                errors[field] = ["Member sessions are not supported by Meterline."]
        has_id, has_external = "customer_id" in attrs, "external_customer_id" in attrs
        if has_id and has_external:
            errors["non_field_errors"] = [
                "Give either customer_id or external_customer_id, not both."
            ]
        elif not has_id and not has_external:
            errors["customer_id"] = ["Field required (or give external_customer_id)."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class CustomerSessionSerializer(serializers.Serializer):
    """Polar's `CustomerSession` output."""

    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()
    return_url = serializers.CharField(allow_null=True)
    customer_portal_url = serializers.CharField()
    customer_id = serializers.UUIDField()
    customer = CustomerSerializer()
