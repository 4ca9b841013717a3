"""Customers' domain errors; the API layer renders them as Polar's 422."""

from core.errors import ValidationFailed


class CustomerConflict(ValidationFailed):
    """Another active customer of the organization has this email or external id."""


class InvalidCustomerChange(ValidationFailed):
    """A change the customer's invariants forbid (e.g. replacing an external id)."""
