"""Request bodies of the payments endpoints."""

from rest_framework import serializers


class PaymentMethodAttachSerializer(serializers.Serializer):
    """Meterline extension: a method the application collected itself at the provider."""

    payment_method_id = serializers.RegexField(
        r"^[A-Za-z0-9_]{3,255}$",
        max_length=255,
        help_text="The provider's payment method id (Stripe: `pm_…`).",
    )
