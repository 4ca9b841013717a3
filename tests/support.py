"""Helpers for tests that start other processes (servers, workers) on the test database."""

from urllib.parse import quote

from django.db import connection


def subprocess_database_url() -> str:
    """A DATABASE_URL for the database this test is connected to, as psycopg actually reached
    it: a host name and port, or a unix-socket directory (the embedded PostgreSQL)."""
    connection.ensure_connection()
    info = connection.connection.info
    user = quote(info.user, safe="")
    password = f":{quote(info.password, safe='')}" if info.password else ""
    name = quote(info.dbname, safe="")
    if info.host.startswith("/"):
        return f"postgresql://{user}{password}@/{name}?host={quote(info.host, safe='')}&port={info.port}"
    return f"postgresql://{user}{password}@{info.host}:{info.port}/{name}"
