"""Celery tasks: thin wrappers over metering services."""

from celery import shared_task

from metering import backfill, compaction, stores
from metering.models import Meter


@shared_task(acks_late=True)
def backfill_meter(meter_id: str, version: int | None = None) -> None:
    """Roll up the events stored before a meter (or its new definition) existed."""
    try:
        backfill.backfill(meter_id, version)
    except Exception as exc:  # recorded on the meter for the admin, then re-raised
        Meter.objects.filter(pk=meter_id).update(backfill_error=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(ignore_result=True)
def relay_event_batches() -> None:
    """Resend event batches the event store has not received (ClickHouse; a no-op otherwise)."""
    stores.current().relay()


@shared_task(ignore_result=True)
def compact_rollups() -> None:
    """Fold committed rollup deltas into the compact tiers (the beat runs it every few seconds)."""
    compaction.compact_rollups()
