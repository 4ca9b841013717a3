"""Recording webhook events (the outbox) and delivering them: Standard Webhooks signatures,
exponential backoff, the delivery log, disabling endpoints that keep failing.

Events are written in the transaction of the change they report, so a rolled-back change sends
nothing and a committed one is never lost; Celery sends them after the commit (`tasks`)."""

import base64
import hashlib
import hmac
import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from webhooks.addresses import Target, resolve
from webhooks.errors import UnsafeWebhookURL
from webhooks.models import (
    API_VERSION,
    EventStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

# Seconds to wait before retry n (1-based). First retry after 15 s, then growing; the whole
# schedule spans 22 h 21 min 15 s before the event is given up.
RETRY_DELAYS = (15, 60, 5 * 60, 15 * 60, 3600, 3 * 3600, 6 * 3600, 12 * 3600)
ATTEMPTS_PER_ROUND = len(RETRY_DELAYS) + 1
RESPONSE_KEPT = 2048  # characters of the response body kept in the log


# An organization's enabled endpoints and their event types, cached so that a change with no
# subscriber (most of them: every cycle close emits three event types) costs no query. Saving
# or deleting an endpoint clears the entry; with a per-process cache (no CACHE_URL) other
# processes see the change within this many seconds.
ENDPOINTS_CACHE_SECONDS = 10


def _cache_key(organization_id) -> str:
    return f"webhooks:endpoints:{organization_id}"


def _enabled_endpoints(organization_id) -> list[tuple[str, list[str]]]:
    key = _cache_key(organization_id)
    found = cache.get(key)
    if found is None:
        found = [
            (str(pk), list(events))
            for pk, events in WebhookEndpoint.objects.filter(
                organization_id=organization_id, enabled=True
            ).values_list("pk", "events")
        ]
        cache.set(key, found, ENDPOINTS_CACHE_SECONDS)
    return found


def forget_endpoints(organization_id) -> None:
    cache.delete(_cache_key(organization_id))


def subscribed_endpoints(organization_id, event_type: str) -> list[WebhookEndpoint]:
    ids = [pk for pk, events in _enabled_endpoints(organization_id) if event_type in events]
    if not ids:
        return []
    # re-read: an endpoint disabled since the cache was filled gets nothing
    return list(WebhookEndpoint.objects.filter(pk__in=ids, enabled=True))


def has_subscribers(organization_id, event_type: str) -> bool:
    return any(event_type in events for _, events in _enabled_endpoints(organization_id))


def render_body(event_type: str, data: dict, *, at: datetime) -> str:
    return json.dumps(
        {
            "type": event_type,
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "api_version": API_VERSION,
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def record(
    endpoints: list[WebhookEndpoint], event_type: str, data: dict, *, at: datetime | None = None
) -> list[WebhookEvent]:
    """Write one event per endpoint (in the caller's transaction). The caller enqueues them."""
    if not endpoints:
        return []
    at = at or timezone.now()
    body = render_body(event_type, data, at=at)
    return WebhookEvent.objects.bulk_create(
        WebhookEvent(
            organization_id=endpoint.organization_id,
            endpoint=endpoint,
            type=event_type,
            body=body,
            next_attempt_at=at,
            final_attempt=ATTEMPTS_PER_ROUND,
        )
        for endpoint in endpoints
    )


def retry_delay(event: WebhookEvent) -> timedelta | None:
    """The wait after the attempt just made, or None when this round's retries are spent."""
    if event.attempts >= event.final_attempt:
        return None
    index = event.attempts - (event.final_attempt - ATTEMPTS_PER_ROUND)
    return timedelta(seconds=RETRY_DELAYS[index - 1])


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """Standard Webhooks: v1 = base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")); the key is
    the secret's UTF-8 bytes, as Polar's SDKs verify it."""
    digest = hmac.new(
        secret.encode(), f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass
class Outcome:
    succeeded: bool
    http_code: int | None
    response: str
    duration_ms: int


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, not to a fresh DNS answer."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: str, headers: dict) -> Outcome:
    """POST with short timeouts to a checked address; every failure becomes an Outcome."""
    started = time.monotonic()

    def done(succeeded, code, text):
        return Outcome(
            succeeded, code, text[:RESPONSE_KEPT], int((time.monotonic() - started) * 1000)
        )

    try:
        target = resolve(url)
    except UnsafeWebhookURL as exc:
        return done(False, None, str(exc.items[0]["msg"]))
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout=settings.WEBHOOK_CONNECT_TIMEOUT)
    try:
        connection.connect()
        connection.sock.settimeout(settings.WEBHOOK_READ_TIMEOUT)
        connection.request("POST", target.path, body=body.encode(), headers=headers)
        response = connection.getresponse()
        text = response.read(RESPONSE_KEPT).decode(errors="replace")
        return done(200 <= response.status < 300, response.status, text)
    except (OSError, http.client.HTTPException) as exc:
        return done(False, None, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


def _claim(event_id, now: datetime) -> WebhookEvent | None:
    """Take the event's next attempt if it is due; the retry time is set before sending, so an
    attempt lost with a crashed worker is picked up again by the sweeper."""
    with transaction.atomic():
        event = (
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .select_related("endpoint")
            .filter(pk=event_id, status=EventStatus.PENDING)
            .first()
        )
        if event is None or (event.next_attempt_at and event.next_attempt_at > now):
            return None
        if not event.endpoint.enabled:
            event.status, event.next_attempt_at = EventStatus.SKIPPED, None
            event.save(update_fields=["status", "next_attempt_at", "modified_at"])
            return None
        event.attempts += 1
        delay = retry_delay(event)
        event.next_attempt_at = now + (delay or timedelta(seconds=RETRY_DELAYS[0]))
        event.save(update_fields=["attempts", "next_attempt_at", "modified_at"])
        return event


def attempt(event_id, *, now: datetime | None = None) -> datetime | None:
    """Make the event's due attempt and log it. Returns when the next attempt is due (None: no
    further attempt — delivered, given up, skipped, or not due/claimed by someone else)."""
    now = now or timezone.now()
    event = _claim(event_id, now)
    if event is None:
        return None
    timestamp = int(time.time())  # signatures carry the real time: receivers check it
    outcome = post(
        event.endpoint.url,
        event.body,
        {
            "Content-Type": "application/json",
            "User-Agent": "Meterline-Webhooks",
            "webhook-id": str(event.pk),
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(event.endpoint.secret, str(event.pk), timestamp, event.body),
        },
    )
    with transaction.atomic():
        WebhookDelivery.objects.create(
            event=event,
            attempt=event.attempts,
            succeeded=outcome.succeeded,
            http_code=outcome.http_code,
            response=outcome.response,
            duration_ms=outcome.duration_ms,
        )
        event.last_http_code = outcome.http_code
        delay = retry_delay(event)
        if outcome.succeeded:
            event.status, event.next_attempt_at = EventStatus.SUCCEEDED, None
        elif delay is None:
            event.status, event.next_attempt_at = EventStatus.FAILED, None
            disable(event.endpoint, reason=_give_up_reason(event, outcome), at=now)
        else:
            event.next_attempt_at = now + delay
        event.save(update_fields=["status", "next_attempt_at", "last_http_code", "modified_at"])
    return event.next_attempt_at


def _give_up_reason(event: WebhookEvent, outcome: Outcome) -> str:
    last = f"HTTP {outcome.http_code}" if outcome.http_code else outcome.response[:200]
    return (
        f"Disabled after {ATTEMPTS_PER_ROUND} failed attempts over about a day to deliver "
        f"{event.type} event {event.pk} (last: {last})."
    )


def disable(endpoint: WebhookEndpoint, *, reason: str, at: datetime) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
        enabled=False, disabled_reason=reason, disabled_at=at, modified_at=at
    )


def redeliver(event: WebhookEvent, *, now: datetime | None = None) -> WebhookEvent:
    """Send the same event (same id and body) again now, with a fresh round of retries."""
    now = now or timezone.now()
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update().get(pk=event.pk)
        event.status, event.next_attempt_at = EventStatus.PENDING, now
        event.final_attempt = event.attempts + ATTEMPTS_PER_ROUND
        event.save(update_fields=["status", "next_attempt_at", "final_attempt", "modified_at"])
    return event


def due_event_ids(*, now: datetime, limit: int = 1000) -> list:
    return list(
        WebhookEvent.objects.filter(status=EventStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
