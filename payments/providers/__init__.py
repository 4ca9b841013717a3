"""The payment providers by name. A second provider is one new module listed here."""

from django.utils.module_loading import import_string

from payments.errors import PaymentError
from payments.providers.base import PaymentProvider

# Imported on first use: the stripe library's import takes ~0.3 s of CPU, and every process
# (web, worker, beat, each management command) imports this module at start.
PROVIDERS: dict[str, str] = {"stripe": "payments.providers.stripe.StripeProvider"}


def get(name: str) -> PaymentProvider:
    try:
        path = PROVIDERS[name]
    except KeyError:
        raise PaymentError(f"No payment provider '{name}' collects charges", field=("provider",))
    provider_class: type[PaymentProvider] = import_string(path)
    return provider_class.from_settings()
