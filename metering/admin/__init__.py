"""Metering's admin: events (read-only, built for huge tables), meters (filter editor with
preview and backfill progress), customer meters (numbers and credit/reset actions), usage
corrections (read-only; made from an event's page)."""

from metering.admin import corrections, customer_meters, events, meter_editor  # noqa: F401
