"""Request bodies of the payments endpoints."""

from django.core.validators import RegexValidator

from core.api.serializers import StrictCharField, StrictSerializer


class PaymentMethodAttachSerializer(StrictSerializer):
    """Meterline extension: a method the application collected itself at the provider."""

    payment_method_id = StrictCharField(
        min_length=3,
        max_length=255,
        validators=[RegexValidator(r"^[A-Za-z0-9_]+\Z", "Input should be a provider's id")],
        help_text="The provider's payment method id (Stripe: `pm_…`).",
    )
