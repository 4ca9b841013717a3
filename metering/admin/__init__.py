"""Metering's admin: events (read-only, built for huge tables), meters (filter editor with
preview and backfill progress), customer meters (numbers and credit/reset actions)."""

from metering.admin import customer_meters, events, meter_editor  # noqa: F401
