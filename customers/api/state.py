"""Customer state (`GET /v1/customers/{id}/state`): the customer plus sections that the apps
above customers contribute (metering: `active_meters`; billing: `active_subscriptions`,
`granted_benefits`). Each registers `provider(customer) -> wire value` under its key."""

from collections.abc import Callable

from customers.api.serializers import CustomerSerializer
from customers.models import Customer

_sections: dict[str, Callable[[Customer], object]] = {}


def register_state_section(key: str, provider: Callable[[Customer], object]) -> None:
    _sections[key] = provider


def customer_state(customer: Customer) -> dict:
    # Polar's CustomerState always has these lists; an app that isn't installed leaves them empty.
    payload = {
        **CustomerSerializer(customer).data,
        "active_subscriptions": [],
        "granted_benefits": [],
        "active_meters": [],
    }
    for key, provider in _sections.items():
        payload[key] = provider(customer)
    return payload
