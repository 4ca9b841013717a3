"""Endpoint lifecycle: create and change (the URL checked against the address rule), the
secret reset."""

from core.errors import ErrorList
from webhooks import addresses
from webhooks.errors import UnsafeWebhookURL
from webhooks.models import ALL_EVENT_TYPES, WebhookEndpoint, new_secret


def check(*, url: str | None, events: list | None) -> None:
    errors = ErrorList()
    if url is not None:
        try:
            addresses.resolve(url)
        except UnsafeWebhookURL as exc:
            errors.items += exc.items
    for index, event in enumerate(events or ()):
        if event not in ALL_EVENT_TYPES:
            errors.add(("events", index), f"Meterline does not send {event!r} events.")
    errors.raise_if_any(UnsafeWebhookURL)


def create_endpoint(*, organization, url: str, events: list, name: str = "") -> WebhookEndpoint:
    check(url=url, events=events)
    return WebhookEndpoint.objects.create(
        organization=organization, url=url, events=list(dict.fromkeys(events)), name=name or ""
    )


def update_endpoint(endpoint: WebhookEndpoint, changes: dict) -> WebhookEndpoint:
    check(url=changes.get("url"), events=changes.get("events"))
    for field in ("url", "name", "events"):
        if changes.get(field) is not None:
            setattr(endpoint, field, changes[field])
    if changes.get("enabled") is True:
        endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = True, "", None
    elif changes.get("enabled") is False:
        endpoint.enabled = False
    endpoint.save()
    return endpoint


def reset_secret(endpoint: WebhookEndpoint) -> WebhookEndpoint:
    endpoint.secret = new_secret()
    endpoint.save(update_fields=["secret", "modified_at"])
    return endpoint
