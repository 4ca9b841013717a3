"""Billing's admin: the catalog, subscriptions and invoices (with the dashboard). Every change
goes through billing's services, like the API's."""

from billing.admin import (  # noqa: F401 - registers the admins
    catalog,
    credit_notes,
    credits,
    invoices,
    subscriptions,
)
