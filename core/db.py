"""Database helpers shared by the apps' set-based SQL."""

from contextlib import contextmanager

import psycopg
from django.db import connection, models


@contextmanager
def bound_cursor():
    """A psycopg cursor with server-side binding, inside Django's current transaction.

    Django binds parameters client-side, quoting every element of a list into SQL text with
    regular expressions; for the ingest path's 1,000-element arrays that was ~65% of a batch's
    time. Server-side binding sends the arrays in binary. Errors are mapped to Django's
    exception classes so callers see the usual IntegrityError/DataError."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


class ExactDecimalField(models.DecimalField):
    """PostgreSQL `numeric` with neither precision nor scale: the decimal is stored exactly as it
    is. For quantities that are subtracted later (units already billed): rounding them to a
    fixed scale would move a later period across a tier bound."""

    def __init__(self, *args, **kwargs):
        kwargs["max_digits"] = kwargs["decimal_places"] = None
        super().__init__(*args, **kwargs)

    def _check_decimal_places_and_max_digits(self, **kwargs):
        return []

    def _check_decimal_places(self):
        return []

    def _check_max_digits(self):
        return []

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("max_digits", None)
        kwargs.pop("decimal_places", None)
        return name, path, args, kwargs

    def db_type(self, connection):
        return "numeric"
