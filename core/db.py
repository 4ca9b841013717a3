"""Database helpers shared by the apps' set-based SQL."""

from contextlib import contextmanager

import psycopg
from django.db import connection


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
