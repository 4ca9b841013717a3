"""Usage corrections: cancel a user event, or replace it with a corrected one (docs/meters.md,
"Correcting usage").

The original is never deleted: the store marks it `canceled`, which takes it out of every meter
(usage reads take `source = 'user'` only), and an `EventCorrection` row keeps what it was, why
it changed and who changed it. A replacement is a new user event with the original's timestamp,
customer and parent, the corrected name and metadata, and the original's **arrival**: it stands
where the original stood, so billing sees it in the same period's set (never as late usage).
Everything happens in one transaction with the store's rollups, so meters, customer state and
upcoming invoices reflect it when the call returns. What an invoiced period billed too much or
too little is billed by the next close (billing.corrections).

Both stores implement `EventStore.correct`; this module validates, looks the events up and
records the corrections."""

import uuid
from collections import Counter
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Greatest

from core import audit
from core.errors import ErrorList
from core.metadata import validate_metadata
from customers.models import Organization
from metering import ingest, stores
from metering.errors import InvalidCorrection
from metering.ingest import CURRENT_TXID_SQL, MAX_NAME, EventRow
from metering.models import CorrectionAction, EventCorrection, EventName, EventSource
from metering.stores.base import StoredEvent

MAX_CORRECTIONS = 1000
NUL = "\x00"  # PostgreSQL text can't hold it
PAST = {CorrectionAction.CANCEL: "canceled", CorrectionAction.REPLACE: "replaced"}
MAX_REASON = 500
FIELDS = {"event_id", "external_id", "action", "reason", "name", "metadata"}


@dataclass(frozen=True)
class Correction:
    """One validated correction: the event, and for a replacement the row that replaces it."""

    event: StoredEvent  # metering.stores.base
    action: str
    reason: str
    replacement: EventRow | None = None


def correct_events(
    *, organization: Organization, corrections: list, actor: str, user=None
) -> list[EventCorrection]:
    """All or nothing: `corrections` is a list of objects `{event_id | external_id, action
    ("cancel" | "replace"), reason, name?, metadata?}` (a replacement keeps the original's name
    and metadata unless given). Raises InvalidCorrection naming every problem, nothing written."""
    errors = ErrorList()
    if not isinstance(corrections, list):
        errors.add([], "Input should be a valid list", "list_type")
        errors.raise_if_any(InvalidCorrection)
    if not corrections:
        errors.add([], "At least one correction is required", "too_short")
    if len(corrections) > MAX_CORRECTIONS:
        errors.add([], f"At most {MAX_CORRECTIONS} corrections per request", "too_long")
    errors.raise_if_any(InvalidCorrection)
    wanted = [_read(item, [index], errors) for index, item in enumerate(corrections)]
    errors.raise_if_any(InvalidCorrection)
    found = _lookup(organization, wanted)
    validated: list[Correction] = []
    seen: dict = {}
    for index, (item, (by, key)) in enumerate(zip(corrections, wanted, strict=True)):
        event = found.get((by, key))
        loc = [index, by]
        if event is None:
            errors.add(loc, "Event does not exist.", "event_not_found", key)
            continue
        if event.source == EventSource.SYSTEM:
            errors.add(loc, "System events (credits, resets) can't be corrected.", "value_error")
            continue
        if event.source == EventSource.CANCELED:
            errors.add(loc, "This event was corrected already.", "already_corrected", key)
            continue
        if event.id in seen:
            errors.add(loc, f"The same event as correction {seen[event.id]}.", "duplicate")
            continue
        seen[event.id] = index
        action = item["action"]
        replacement = None
        if action == CorrectionAction.REPLACE:
            replacement = EventRow(
                name=item.get("name", event.name),
                timestamp=event.timestamp,
                customer_id=event.customer_id,
                external_customer_id=event.external_customer_id,
                external_id=None,  # the original keeps it: a resend stays a duplicate
                parent_reference=str(event.parent_id)
                if event.parent_id
                else event.parent_reference,
                metadata=item.get("metadata", event.metadata),
            )
        validated.append(Correction(event, action, item["reason"].strip(), replacement))
    errors.raise_if_any(InvalidCorrection)
    try:
        with transaction.atomic():
            replacement_ids = stores.current().correct(
                organization=organization, corrections=validated
            )
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {CURRENT_TXID_SQL}")
                (txid,) = cursor.fetchone()
            rows = EventCorrection.objects.bulk_create(
                [
                    _record(organization, correction, replacement_id, txid, actor, user)
                    for correction, replacement_id in zip(validated, replacement_ids, strict=True)
                ]
            )
            _uncount_names(organization, validated)
            for row in rows:
                audit.record(
                    row,
                    action=f"event {PAST[row.action]}: {row.reason}",
                    changes={
                        "event_id": (None, row.event_id),
                        "replacement_id": (None, row.replacement_id),
                    },
                    created=True,
                    caller=actor,
                )
            # spend thresholds, alerts and top-ups look at the replacements like any ingest
            ingest.announce(organization, [i for i in replacement_ids if i is not None])
    except IntegrityError as exc:
        # two requests corrected the same event at once: the second one loses, whole
        raise InvalidCorrection(
            "One of these events was corrected by another request meanwhile.",
            type_="already_corrected",
        ) from exc
    return rows


def _uncount_names(organization, corrections: list[Correction]) -> None:
    """The organization's event-name counts (`EventName`, kept by ingestion) leave canceled
    events out; a replacement was counted when the store inserted it."""
    by_name = Counter(c.event.name for c in corrections)
    for name in sorted(by_name):  # the ingest's lock order: event names by name
        EventName.objects.filter(
            organization=organization, name=name, source=EventSource.USER
        ).update(occurrences=Greatest(F("occurrences") - by_name[name], 0))


def _read(item, loc: list, errors: ErrorList) -> tuple[str, object]:
    """Check one correction's shape; returns what names its event: (field, value)."""
    if not isinstance(item, dict):
        errors.add(loc, "Input should be a valid dictionary", "dict_type")
        return ("event_id", None)
    for key in sorted(set(item) - FIELDS):
        errors.add([*loc, key], "Extra inputs are not permitted", "extra_forbidden")
    target = ("event_id", None)
    has_id, has_external = item.get("event_id") is not None, item.get("external_id") is not None
    if has_id == has_external:
        errors.add(loc, "Exactly one of event_id or external_id is required", "event_reference")
    elif has_id:
        try:
            target = ("event_id", uuid.UUID(item["event_id"]))
        except (TypeError, ValueError, AttributeError):
            errors.add([*loc, "event_id"], "Input should be a valid UUID", "uuid_parsing")
    elif not isinstance(item["external_id"], str) or not item["external_id"]:
        errors.add([*loc, "external_id"], "Input should be a non-empty string", "string_type")
    elif NUL in item["external_id"]:
        errors.add([*loc, "external_id"], "NUL characters are not allowed", "string_nul")
    else:
        target = ("external_id", item["external_id"])
    action = item.get("action")
    if action not in CorrectionAction.values:
        errors.add(
            [*loc, "action"], "Input should be 'cancel' or 'replace'", "enum", _plain(action)
        )
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        errors.add([*loc, "reason"], "A reason is required", "missing")
    elif len(reason) > MAX_REASON:
        errors.add([*loc, "reason"], f"At most {MAX_REASON} characters", "string_too_long")
    elif NUL in reason:
        errors.add([*loc, "reason"], "NUL characters are not allowed", "string_nul")
    if action == CorrectionAction.CANCEL:
        for key in ("name", "metadata"):
            if key in item:
                errors.add([*loc, key], "Only a replacement has a name or metadata", "value_error")
    elif action == CorrectionAction.REPLACE:
        if "name" not in item and "metadata" not in item:
            errors.add(loc, "A replacement needs a name, metadata or both", "missing")
        if "name" in item:
            name = item["name"]
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
                errors.add(
                    [*loc, "name"], f"A non-empty string of at most {MAX_NAME}", "string_type"
                )
            elif NUL in name:
                errors.add([*loc, "name"], "NUL characters are not allowed", "string_nul")
        if "metadata" in item:
            before = len(errors.items)
            cleaned = validate_metadata(
                item["metadata"], [*loc, "metadata"], errors, structured=True
            )
            if len(errors.items) == before:
                item["metadata"] = cleaned
    return target


def _plain(value):
    return value if isinstance(value, str | int | float | bool) else None


def _lookup(organization, wanted: list) -> dict:
    ids = [key for by, key in wanted if by == "event_id" and key is not None]
    external_ids = [key for by, key in wanted if by == "external_id"]
    found = {}
    for event in stores.current().find_events(organization.pk, ids=ids, external_ids=external_ids):
        found["event_id", event.id] = event
        if event.external_id is not None:
            found["external_id", event.external_id] = event
    return found


def _record(organization, correction: Correction, replacement_id, txid, actor, user):
    event, replacement = correction.event, correction.replacement
    return EventCorrection(
        organization=organization,
        event_id=event.id,
        action=correction.action,
        reason=correction.reason,
        replacement_id=replacement_id,
        customer_id=event.customer_id,
        event_timestamp=event.timestamp,
        event_arrival_txid=event.arrival_txid,
        original={
            "name": event.name,
            "external_id": event.external_id,
            "external_customer_id": event.external_customer_id,
            "metadata": event.metadata,
        },
        replacement=(
            {"name": replacement.name, "metadata": replacement.metadata} if replacement else None
        ),
        txid=txid,
        actor=actor[:200],
        created_by=user,
    )
