"""Meter lifecycle: create, redefine, rebuild, archive. A meter applies to the events already
stored: a new or redefined meter is rolled up by a backfill (`metering.backfill`), and reads use
raw events until it is done. The API and the admin both change meters through these functions,
which refuse what the apps above forbid (a meter on a finalized invoice keeps its definition, a
meter a price uses can't be archived) with `InvalidMeter`. A staff user's edit of a meter is in
the audit log (core.audit) with each changed field before and after."""

import decimal
import json

from django.db import connection, transaction
from django.utils import timezone

from core import audit
from customers.models import Organization
from metering import hooks, locks, rollups, stores
from metering.errors import InvalidMeter
from metering.models import Meter, MeterState, MeterUnit
from metering.tasks import backfill_meter

# --- lifecycle --------------------------------------------------------------------------------


def definition_change_blockers(meter: Meter) -> list[str]:
    """Reasons that forbid changing the meter's filter or aggregation (registered guards)."""
    return [reason for guard in hooks.definition_change_guards for reason in guard(meter)]


def archive_blockers(meter: Meter) -> list[str]:
    """Reasons that forbid archiving the meter (registered guards)."""
    return [reason for guard in hooks.archive_guards for reason in guard(meter)]


def check_change(meter: Meter, changes: dict) -> None:
    """InvalidMeter, naming the field, when `changes` are not allowed on this meter."""
    redefines = any(
        key in changes and changes[key] != getattr(meter, key) for key in ("filter", "aggregation")
    )
    if redefines and (blockers := definition_change_blockers(meter)):
        raise InvalidMeter("; ".join(blockers), field=("filter",))
    unit = changes.get("unit", meter.unit)
    if unit == MeterUnit.CUSTOM and not changes.get("custom_label", meter.custom_label):
        raise InvalidMeter(
            "custom_label is required when unit is 'custom'", field=("custom_label",)
        )


def _jsonable(value):
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def create_meter(
    *,
    organization: Organization,
    name: str,
    filter: dict,
    aggregation: dict,
    unit: str = "scalar",
    custom_label: str | None = None,
    custom_multiplier: int | None = None,
    metadata: dict | None = None,
) -> Meter:
    """Create a meter; it applies to events already stored through a backfill (reads use raw
    events until the backfill is done)."""
    if unit == MeterUnit.CUSTOM and not custom_label:
        raise InvalidMeter(
            "custom_label is required when unit is 'custom'", field=("custom_label",)
        )
    with transaction.atomic():
        # Exclusive: every ingest that committed before is seen by the check below (and left
        # to the backfill), every later one reads the meter list after this commit.
        with connection.cursor() as cursor:
            locks.lock_organization(cursor, organization.pk, exclusive=True)
        has_events = _organization_has_events(organization.pk)
        meter = Meter.objects.create(
            organization=organization,
            name=name,
            filter=filter,
            aggregation=aggregation,
            unit=unit,
            custom_label=custom_label,
            custom_multiplier=custom_multiplier,
            metadata=_jsonable(metadata or {}),
            modified_at=timezone.now(),
            state=MeterState.BACKFILLING if has_events else MeterState.READY,
            backfill_started_at=timezone.now() if has_events else None,
        )
        if has_events:
            _enqueue_backfill(meter)
    return meter


# JSON fields, audited as JSON text (keys sorted): comparable before and after
JSON_FIELDS = ("filter", "aggregation", "metadata")


def _audited(key: str, value):
    return json.dumps(value, sort_keys=True) if key in JSON_FIELDS and value is not None else value


def update_meter(*, meter: Meter, **changes) -> Meter:
    """Apply changes; a new filter or aggregation rebuilds the rollups like a create."""
    with transaction.atomic():
        meter = Meter.objects.select_for_update().get(pk=meter.pk)
        check_change(meter, changes)
        before = {key: getattr(meter, key) for key in changes}
        redefine = False
        for key in ("filter", "aggregation"):
            if key in changes and changes[key] != getattr(meter, key):
                redefine = True
        for key, value in changes.items():
            if key == "metadata":
                value = _jsonable(value)
            setattr(meter, key, value)
        meter.modified_at = timezone.now()
        if redefine:
            _reset_rollups(meter)
            _enqueue_backfill(meter)
        meter.save()
        changed = {
            key: (_audited(key, old), _audited(key, getattr(meter, key)))
            for key, old in before.items()
            if old != getattr(meter, key)
        }
        if changed:
            audit.record(meter, action="meter change", changes=changed)
    return meter


def _reset_rollups(meter: Meter) -> None:
    with connection.cursor() as cursor:
        # Exclusive: no ingest is adding to the old definition's rollups meanwhile.
        locks.lock_organization(cursor, meter.organization_id, exclusive=True)
        _delete_rollups(cursor, meter)
    meter.definition_version += 1
    meter.state = MeterState.BACKFILLING
    meter.backfill_cursor = None
    meter.backfill_events_done = 0
    meter.backfill_events_total = 0
    meter.backfill_started_at = timezone.now()
    meter.backfill_finished_at = None
    meter.backfill_error = ""


def start_rebuild(*, meter: Meter, enqueue: bool = True) -> Meter:
    """Drop a meter's rollups and rebuild them from events (reads use raw events meanwhile)."""
    with transaction.atomic():
        meter = Meter.objects.select_for_update().get(pk=meter.pk)
        _reset_rollups(meter)
        meter.save()
        if enqueue:
            _enqueue_backfill(meter)
    return meter


def set_archived(*, meter: Meter, archived: bool) -> Meter:
    if archived and meter.archived_at is None and (blockers := archive_blockers(meter)):
        raise InvalidMeter("Cannot archive: " + "; ".join(blockers), field=("is_archived",))
    meter.archived_at = (meter.archived_at or timezone.now()) if archived else None
    meter.modified_at = timezone.now()
    meter.save(update_fields=["archived_at", "modified_at"])
    return meter


def _organization_has_events(organization_id) -> bool:
    return stores.current().has_user_events(organization_id)


def _enqueue_backfill(meter: Meter) -> None:
    backfill_meter.delay_on_commit(str(meter.pk), meter.definition_version)


def _delete_rollups(cursor, meter: Meter) -> None:
    # every tier, pending deltas included (the caller holds the exclusive lock: no ingest or
    # compaction of this organization is writing them meanwhile)
    rollups.delete_meter_rollups(cursor, meter.pk)


def delete_meter(*, meter: Meter) -> None:
    """Delete a meter with everything derived from it: rollups (kept without a foreign key, for
    the ingest path's sake) and customer meters. Events stay: they are the record."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Exclusive: no ingest is adding rows for this meter while they are deleted.
            locks.lock_organization(cursor, meter.organization_id, exclusive=True)
            _delete_rollups(cursor, meter)
        meter.delete()
