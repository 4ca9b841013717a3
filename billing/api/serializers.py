"""Request bodies (Polar's input shapes plus Meterline extensions), validated strictly: unknown
fields, wrong types and bad enum values are 422s naming the field. Response bodies:
`billing.api.response_serializers`."""

from rest_framework import serializers

from billing.catalog import MAX_EXPIRY_DAYS
from billing.credit_notes import REASONS
from billing.models import DiscountDuration, DiscountType, Interval
from billing.money import is_known_currency
from customers.api.serializers import MetadataField, StrictSerializer

MAX_CENTS = 10**13


class CurrencyField(serializers.CharField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not is_known_currency(value):
            raise serializers.ValidationError("Input should be an ISO 4217 currency code.")
        return value.upper()


class PricesField(serializers.ListField):
    """Polar's price create shapes; checked in detail by the catalog (billing.catalog)."""

    child = serializers.DictField()
    max_length = 50


class ProductCreateSerializer(StrictSerializer):
    ignored_fields = ("organization_id", "visibility", "medias", "attached_custom_fields")

    name = serializers.CharField(max_length=256)
    description = serializers.CharField(
        max_length=10_000, required=False, allow_null=True, allow_blank=True
    )
    # null or absent: a one-time product, bought rather than subscribed to (a credit pack), as
    # Polar's ProductCreateOneTime
    recurring_interval = serializers.ChoiceField(
        choices=Interval.values, required=False, allow_null=True, default=None
    )
    recurring_interval_count = serializers.IntegerField(min_value=1, max_value=999, default=1)
    trial_interval = serializers.ChoiceField(
        choices=Interval.values, required=False, allow_null=True
    )
    trial_interval_count = serializers.IntegerField(
        min_value=1, max_value=999, required=False, allow_null=True
    )
    prices = PricesField(min_length=1)
    metadata = MetadataField(required=False, default=dict)
    meter_interval = serializers.ChoiceField(
        choices=Interval.values, required=False, allow_null=True
    )
    meter_interval_count = serializers.IntegerField(required=False, allow_null=True)
    # Meterline extension: its subscriptions' default spend threshold in cents; null: none
    spend_threshold_amount = serializers.IntegerField(
        min_value=1, max_value=MAX_CENTS, required=False, allow_null=True
    )

    def validate(self, attrs):
        if attrs.get("meter_interval") is not None:
            raise serializers.ValidationError(
                {
                    "meter_interval": [
                        "A meter cycle apart from the billing interval is not supported."
                    ]
                }
            )
        if bool(attrs.get("trial_interval")) != bool(attrs.get("trial_interval_count")):
            raise serializers.ValidationError(
                {"trial_interval_count": ["trial_interval and trial_interval_count go together."]}
            )
        return attrs


class ProductUpdateSerializer(StrictSerializer):
    ignored_fields = ("visibility", "medias", "attached_custom_fields")

    name = serializers.CharField(max_length=256, required=False)
    description = serializers.CharField(
        max_length=10_000, required=False, allow_null=True, allow_blank=True
    )
    is_archived = serializers.BooleanField(required=False, allow_null=True)
    metadata = MetadataField(required=False)
    prices = PricesField(required=False, min_length=1)
    trial_interval = serializers.ChoiceField(
        choices=Interval.values, required=False, allow_null=True
    )
    trial_interval_count = serializers.IntegerField(
        min_value=1, max_value=999, required=False, allow_null=True
    )
    recurring_interval = serializers.ChoiceField(
        choices=Interval.values, required=False, allow_null=True
    )
    recurring_interval_count = serializers.IntegerField(
        min_value=1, max_value=999, required=False, allow_null=True
    )
    # Meterline extension: its subscriptions' default spend threshold in cents; null: none
    spend_threshold_amount = serializers.IntegerField(
        min_value=1, max_value=MAX_CENTS, required=False, allow_null=True
    )


class ProductBenefitsSerializer(StrictSerializer):
    benefits = serializers.ListField(child=serializers.UUIDField(), max_length=50)


class MeterCreditPropertiesSerializer(StrictSerializer):
    units = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    rollover = serializers.BooleanField()
    meter_id = serializers.UUIDField()
    # Meterline extension: a credit pack's units expire this many days after the order is paid
    # (null or absent: never); bounded so the expiry stays a date
    expires_after_days = serializers.IntegerField(
        min_value=1, max_value=MAX_EXPIRY_DAYS, required=False, allow_null=True
    )


class BenefitCreateSerializer(StrictSerializer):
    ignored_fields = ("organization_id", "visibility")

    type = serializers.ChoiceField(choices=["meter_credit"])
    description = serializers.CharField(min_length=3, max_length=42)
    properties = MeterCreditPropertiesSerializer()
    metadata = MetadataField(required=False, default=dict)


class DiscountCreateSerializer(StrictSerializer):
    ignored_fields = ("organization_id", "max_redemptions_per_customer", "amounts")

    name = serializers.CharField(max_length=256)
    type = serializers.ChoiceField(choices=DiscountType.values, required=False)
    duration = serializers.ChoiceField(choices=DiscountDuration.values)
    duration_in_months = serializers.IntegerField(
        min_value=1, max_value=999, required=False, allow_null=True
    )
    basis_points = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    amount = serializers.IntegerField(
        min_value=1, max_value=MAX_CENTS, required=False, allow_null=True
    )
    currency = CurrencyField(required=False, allow_null=True)
    code = serializers.RegexField(r"^[A-Za-z0-9_-]{3,64}$", required=False, allow_null=True)
    starts_at = serializers.DateTimeField(required=False, allow_null=True)
    ends_at = serializers.DateTimeField(required=False, allow_null=True)
    max_redemptions = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, required=False, allow_null=True
    )
    products = serializers.ListField(
        child=serializers.UUIDField(), required=False, allow_null=True, max_length=100
    )
    metadata = MetadataField(required=False, default=dict)

    def validate(self, attrs):
        if "type" not in attrs:
            attrs["type"] = (
                DiscountType.PERCENTAGE if "basis_points" in attrs else DiscountType.FIXED
            )
        return attrs


class DiscountUpdateSerializer(StrictSerializer):
    ignored_fields = ("max_redemptions_per_customer", "amounts")

    name = serializers.CharField(max_length=256, required=False)
    code = serializers.RegexField(r"^[A-Za-z0-9_-]{3,64}$", required=False, allow_null=True)
    starts_at = serializers.DateTimeField(required=False, allow_null=True)
    ends_at = serializers.DateTimeField(required=False, allow_null=True)
    max_redemptions = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, required=False, allow_null=True
    )
    metadata = MetadataField(required=False)
    products = serializers.ListField(
        child=serializers.UUIDField(), required=False, allow_null=True, max_length=100
    )
    # amounts and durations of a redeemed discount are not changed (they'd rewrite promises)
    duration = serializers.ChoiceField(choices=DiscountDuration.values, required=False)
    duration_in_months = serializers.IntegerField(required=False, allow_null=True)
    type = serializers.ChoiceField(choices=DiscountType.values, required=False, allow_null=True)
    amount = serializers.IntegerField(required=False, allow_null=True)
    currency = serializers.CharField(required=False, allow_null=True)
    basis_points = serializers.IntegerField(required=False, allow_null=True)


class SubscriptionCreateSerializer(StrictSerializer):
    product_id = serializers.UUIDField()
    customer_id = serializers.UUIDField(required=False)
    external_customer_id = serializers.CharField(max_length=256, required=False)
    metadata = MetadataField(required=False, default=dict)
    # Meterline extensions
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    discount_id = serializers.UUIDField(required=False, allow_null=True)
    # Meterline extension: the spend threshold in cents; null: the product's default
    spend_threshold_amount = serializers.IntegerField(
        min_value=1, max_value=MAX_CENTS, required=False, allow_null=True
    )

    def validate(self, attrs):
        if ("customer_id" in attrs) == ("external_customer_id" in attrs):
            raise serializers.ValidationError(
                {"customer_id": ["Exactly one of customer_id or external_customer_id is required."]}
            )
        return attrs


class SubscriptionUpdateSerializer(StrictSerializer):
    ignored_fields = ("customer_cancellation_reason", "customer_cancellation_comment")

    cancel_at_period_end = serializers.BooleanField(required=False)
    revoke = serializers.BooleanField(required=False)
    discount_id = serializers.UUIDField(required=False, allow_null=True)
    metadata = MetadataField(required=False)
    product_id = serializers.UUIDField(required=False, allow_null=True)
    proration_behavior = serializers.ChoiceField(
        choices=["invoice", "prorate", "next_period", "reset"], required=False, allow_null=True
    )
    # Polar's SubscriptionUpdateClear: only null (drop the pending plan change)
    pending_update = serializers.JSONField(required=False, allow_null=True)
    # Meterline extension: the spend threshold in cents; null: the product's default
    spend_threshold_amount = serializers.IntegerField(
        min_value=1, max_value=MAX_CENTS, required=False, allow_null=True
    )

    def validate(self, attrs):
        if attrs.get("proration_behavior") == "reset":
            raise serializers.ValidationError(
                {
                    "proration_behavior": [
                        "'reset' (restarting the billing period at the change) is not supported: "
                        "use prorate, invoice or next_period."
                    ]
                }
            )
        if attrs.get("proration_behavior") and attrs.get("product_id") is None:
            raise serializers.ValidationError(
                {"proration_behavior": ["proration_behavior needs a product_id."]}
            )
        if attrs.get("pending_update", None) is not None:
            raise serializers.ValidationError({"pending_update": ["Input should be null."]})
        if "revoke" in attrs and attrs["revoke"] is not True:
            raise serializers.ValidationError({"revoke": ["Input should be true."]})
        return attrs


class TaxRateCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=128)
    country = serializers.RegexField(r"^[A-Za-z]{2}$")
    state = serializers.RegexField(r"^[A-Za-z0-9]{1,8}$", required=False, allow_null=True)
    basis_points = serializers.IntegerField(min_value=0, max_value=10_000)
    inclusive = serializers.BooleanField(default=False)


class TaxRateUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=128, required=False)
    basis_points = serializers.IntegerField(min_value=0, max_value=10_000, required=False)
    inclusive = serializers.BooleanField(required=False)


class CreditNoteCreateSerializer(StrictSerializer):
    """A credit note to the customer's balance (Meterline extension); refunds make their own."""

    order_id = serializers.UUIDField()
    amount = serializers.IntegerField(min_value=1, max_value=MAX_CENTS)
    reason = serializers.ChoiceField(choices=REASONS)
    comment = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, allow_null=True, default=""
    )
