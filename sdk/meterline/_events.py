"""Event preparation: idempotency key, timestamp and strategy marker, added before queueing."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

MAX_METADATA_KEYS = 50

Event = dict[str, Any]


def new_external_id() -> str:
    return uuid.uuid4().hex


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _timestamp(value: Any) -> Any:
    if value is None:
        return utc_now_iso()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # naive datetimes are taken as UTC
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    return value


def prepare_event(event: Mapping[str, Any], default_strategy: str = "manual") -> Event:
    """Copy ``event`` and complete it: ``external_id`` (uuid4 hex unless given), ``timestamp``
    (now, UTC, with offset unless given) and ``metadata.strategy`` (unless given and room is
    left under the 50-key limit). The caller's mapping is never modified."""
    prepared = dict(event)
    if not prepared.get("external_id"):
        prepared["external_id"] = new_external_id()
    prepared["timestamp"] = _timestamp(prepared.get("timestamp"))
    metadata = dict(prepared.get("metadata") or {})
    if "strategy" not in metadata and len(metadata) < MAX_METADATA_KEYS:
        metadata["strategy"] = default_strategy
    prepared["metadata"] = metadata
    return prepared


def customer_fields(customer: str | None, customer_id: str | None) -> dict[str, str]:
    """The event fields naming a customer: ``customer`` is the application's own id (Meterline's
    ``external_customer_id``); ``customer_id`` is Meterline's customer id. Exactly one."""
    if (customer is None) == (customer_id is None):
        raise ValueError("give exactly one of customer= (external id) or customer_id=")
    if customer is not None:
        return {"external_customer_id": str(customer)}
    return {"customer_id": str(customer_id)}


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("non-finite Decimal")
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=json_default, allow_nan=False, separators=(",", ":")).encode()
