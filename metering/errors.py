"""Metering's domain errors. Services raise these; the API layer renders them (`core.api`), the
admin shows them as messages."""

from core.errors import ValidationFailed


class MeteringError(Exception):
    """A request the metering domain refuses (not an input-shape problem)."""


class InvalidEvents(ValidationFailed):
    """An ingest batch with at least one invalid event: nothing of it was written."""


class InvalidMeter(ValidationFailed):
    """A meter definition (filter, aggregation, unit …) that can't be stored."""


class InvalidCredit(MeteringError):
    """Credits must be a whole number of units."""


class OrganizationMismatch(MeteringError):
    """A meter and a customer of different organizations were combined."""
