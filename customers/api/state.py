"""Customer state (`GET /v1/customers/{id}/state`): the customer plus sections that the apps
above customers contribute (metering: `active_meters`; billing: `active_subscriptions`,
`granted_benefits`). Each registers `provider(customer) -> {key: wire value}`."""

from collections.abc import Callable

from customers.api.serializers import CustomerSerializer
from customers.models import Customer

_sections: list[Callable[[Customer], dict]] = []


def register_state_section(provider: Callable[[Customer], dict]) -> None:
    if provider not in _sections:
        _sections.append(provider)


def customer_state(customer: Customer) -> dict:
    # Polar's CustomerState always has these lists; an app that isn't installed leaves them empty.
    payload = {
        **CustomerSerializer(customer).data,
        "active_subscriptions": [],
        "granted_benefits": [],
        "active_meters": [],
        "balances": [],
    }
    for provider in _sections:
        payload.update(provider(customer))
    return payload
