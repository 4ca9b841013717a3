"""Endpoints, events and deliveries in Polar's wire shapes."""

from billing.api.payloads import iso
from webhooks.models import API_VERSION, EXTENSION_EVENT_TYPES


def endpoint_payload(endpoint) -> dict:
    return {
        "id": str(endpoint.pk),
        "created_at": iso(endpoint.created_at),
        "modified_at": iso(endpoint.modified_at),
        "url": endpoint.url,
        "name": endpoint.name or None,
        "api_version": API_VERSION,
        "format": endpoint.format,
        "secret": endpoint.secret,
        "organization_id": str(endpoint.organization_id),
        "events": [e for e in endpoint.events if e not in EXTENSION_EVENT_TYPES],
        "enabled": endpoint.enabled,
        "uses_standard_webhook_signature": True,
        # extensions: Meterline's own event types (kept out of `events`, whose values Polar's
        # clients check against their list), and why Meterline disabled the endpoint
        "extension_events": [e for e in endpoint.events if e in EXTENSION_EVENT_TYPES],
        "disabled_reason": endpoint.disabled_reason or None,
        "disabled_at": iso(endpoint.disabled_at),
    }


def event_payload(event) -> dict:
    return {
        "id": str(event.pk),
        "created_at": iso(event.created_at),
        "modified_at": iso(event.modified_at),
        "last_http_code": event.last_http_code,
        "succeeded": {"succeeded": True, "failed": False}.get(
            event.status, False if event.attempts else None
        ),
        "skipped": event.status == "skipped",
        "api_version": API_VERSION,
        "payload": event.body,
        "type": event.type,
        "is_archived": False,
        # extensions
        "status": event.status,
        "attempts": event.attempts,
        "next_attempt_at": iso(event.next_attempt_at),
    }


def delivery_payload(delivery) -> dict:
    return {
        "id": str(delivery.pk),
        "created_at": iso(delivery.created_at),
        "modified_at": None,
        "succeeded": delivery.succeeded,
        "http_code": delivery.http_code,
        "response": delivery.response or None,
        "webhook_event": event_payload(delivery.event),
        # extensions
        "attempt": delivery.attempt,
        "duration_ms": delivery.duration_ms,
        "endpoint_id": str(delivery.event.endpoint_id),
    }
