"""Payments in Polar's `Payment` shapes: `CardPayment` when the card is known, else
`GenericPayment` (documented as the `oneOf` of both, told apart by `method`)."""

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from payments.models import PaymentStatus, PaymentTrigger


class PaymentFieldsSerializer(serializers.Serializer):
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    id = serializers.UUIDField()
    processor = serializers.ChoiceField(choices=["stripe"], source="provider")
    status = serializers.ChoiceField(choices=PaymentStatus.values)
    amount = serializers.IntegerField(help_text="The payment amount in cents.")
    currency = serializers.SerializerMethodField()
    trigger = serializers.ChoiceField(choices=PaymentTrigger.values, allow_null=True)
    decline_reason = serializers.CharField(allow_null=True)
    decline_message = serializers.CharField(allow_null=True)
    organization_id = serializers.UUIDField()
    checkout_id = serializers.SerializerMethodField()
    order_id = serializers.UUIDField(source="invoice_id")
    processor_metadata = serializers.SerializerMethodField()

    def get_currency(self, payment) -> str:
        return payment.currency.lower()

    def get_checkout_id(self, payment) -> str | None:
        return None

    def get_processor_metadata(self, payment) -> dict:
        return {
            "intent_id": payment.provider_payment_id,
            "attempt": payment.attempt,
            "not_attempted": payment.not_attempted,
        }


class CardMetadataSerializer(serializers.Serializer):
    brand = serializers.CharField(source="method_brand")
    last4 = serializers.CharField(source="method_last4")


class CardPaymentSerializer(PaymentFieldsSerializer):
    method = serializers.ChoiceField(choices=["card"], default="card", read_only=True)
    method_metadata = CardMetadataSerializer(source="*")

    def to_representation(self, payment):
        return {**super().to_representation(payment), "method": "card"}


class GenericPaymentSerializer(PaymentFieldsSerializer):
    method = serializers.SerializerMethodField()

    def get_method(self, payment) -> str:
        return "unknown"


class PaymentSerializer(serializers.Serializer):
    """A card payment when its card is known, else a generic one."""

    def to_representation(self, payment):
        kind = CardPaymentSerializer if payment.method_last4 else GenericPaymentSerializer
        return kind(payment).data


class PaymentSerializerExtension(OpenApiSerializerExtension):
    target_class = PaymentSerializer

    def map_serializer(self, auto_schema, direction):
        union = PolymorphicProxySerializer(
            component_name="Payment",
            serializers=[CardPaymentSerializer, GenericPaymentSerializer],
            resource_type_field_name=None,
        )
        return auto_schema._map_serializer(union, direction)


class PaymentMethodSerializer(serializers.Serializer):
    """Meterline extension: the customer's default method as the provider described it."""

    customer_id = serializers.UUIDField(source="customer.pk")
    processor = serializers.ChoiceField(choices=["stripe"], source="provider")
    payment_method_id = serializers.CharField(source="default_method_id")
    brand = serializers.CharField()
    last4 = serializers.CharField()
    exp_month = serializers.IntegerField(allow_null=True)
    exp_year = serializers.IntegerField(allow_null=True)
    retried_payments = serializers.SerializerMethodField()

    def get_retried_payments(self, profile) -> list[str]:
        return [str(payment.pk) for payment in self.context.get("retried", [])]


class ProviderWebhookAckSerializer(serializers.Serializer):
    received = serializers.BooleanField()
    applied = serializers.BooleanField(help_text="False when the event was delivered before.")
