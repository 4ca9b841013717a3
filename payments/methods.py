"""A customer's provider customer and default payment method."""

from django.db import transaction

from payments import providers
from payments.configuration import resolved
from payments.errors import PaymentError
from payments.models import BillingProfile, Provider


def _provider_name(customer) -> str:
    provider, _, _ = resolved(customer.organization_id)
    if provider == Provider.MANUAL:
        raise PaymentError(
            "The organization collects payments manually: no payment provider is configured",
            field=("payment_method_id",),
        )
    return provider


def ensure_provider_customer(customer) -> BillingProfile:
    """The customer's profile with a provider customer, created at the provider on first need.
    Creating it twice (two requests at once) is harmless: the provider call is idempotent per
    customer, and the row is written once."""
    name = _provider_name(customer)
    profile = BillingProfile.objects.filter(customer=customer).first()
    if profile and profile.provider_customer_id and profile.provider == name:
        return profile
    provider_customer_id = providers.get(name).create_customer(
        email=customer.email, name=customer.name, reference=str(customer.pk)
    )
    with transaction.atomic():
        profile, _ = BillingProfile.objects.select_for_update().get_or_create(
            customer=customer, defaults={"provider": name}
        )
        if not profile.provider_customer_id or profile.provider != name:
            profile.provider = name
            profile.provider_customer_id = provider_customer_id
            profile.default_method_id = None
            profile.brand, profile.last4 = "", ""
            profile.exp_month = profile.exp_year = None
            profile.save()
    return profile


def create_setup_session(customer):
    profile = ensure_provider_customer(customer)
    return providers.get(profile.provider).create_setup_session(
        provider_customer_id=profile.provider_customer_id
    )


def set_default_method(customer, method_id: str) -> BillingProfile:
    """Attach the provider's method to the customer and make it the default (collection's
    `retry_after_new_method` then retries the customer's failed invoices)."""
    profile = ensure_provider_customer(customer)
    info = providers.get(profile.provider).attach_default_method(
        provider_customer_id=profile.provider_customer_id, method_id=method_id
    )
    with transaction.atomic():
        profile = BillingProfile.objects.select_for_update().get(pk=profile.pk)
        profile.default_method_id = info.id
        profile.brand, profile.last4 = info.brand, info.last4
        profile.exp_month, profile.exp_year = info.exp_month, info.exp_year
        profile.save()
    return profile
