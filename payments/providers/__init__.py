"""The payment providers by name. A second provider is one new module listed here."""

from payments.errors import PaymentError
from payments.providers.base import PaymentProvider
from payments.providers.stripe import StripeProvider

PROVIDERS: dict[str, type[PaymentProvider]] = {"stripe": StripeProvider}


def get(name: str) -> PaymentProvider:
    try:
        provider_class = PROVIDERS[name]
    except KeyError:
        raise PaymentError(f"No payment provider '{name}' collects charges", field=("provider",))
    return provider_class.from_settings()
