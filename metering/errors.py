"""Metering's domain errors (`core.errors.DomainError`, problems naming fields inside the input).
Services raise these; the API layer renders them (`core.api`), the admin shows them as messages."""

from core.errors import DomainError


class InvalidEvents(DomainError):
    """An ingest batch with at least one invalid event: nothing of it was written."""


class InvalidCredit(DomainError):
    """Credits must be a whole number of units."""


class OrganizationMismatch(DomainError):
    """A meter and a customer of different organizations were combined."""


class InvalidMeter(DomainError):
    """A meter change the apps above forbid, or an incomplete definition."""


class InvalidCorrection(DomainError):
    """A usage correction naming an unknown, system or already corrected event, or malformed:
    nothing of the request was written."""
