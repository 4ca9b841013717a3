"""Customers' domain errors (`core.errors.DomainError`); the API layer renders them as Polar's
422."""

from core.errors import DomainError


class CustomerConflict(DomainError):
    """Another active customer of the organization has this email or external id."""


class InvalidCustomerChange(DomainError):
    """A change the customer's invariants forbid (e.g. replacing an external id)."""
