"""Shared fixtures: organizations with tokens, an authenticated API client, and a live HTTP
server (pytest-django's threaded live server) driven by the real polar-sdk client."""

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import DatabaseError, connections, transaction
from django.test import TransactionTestCase
from rest_framework.test import APIClient

from customers.tokens import create_token


def pytest_configure(config):
    # Production serves hashed static files from `collectstatic`'s manifest; tests render admin
    # pages without running collectstatic, so they use the plain storage.
    from django.conf import settings

    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

    # Staff users are made in many tests; PBKDF2's 1,000,000 rounds cost ~0.25 s per user there.
    # Tests hash with MD5 (fast, and no test is about the hash); the production hashers stay
    # listed, so a password a subprocess hashed still checks.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        *settings.PASSWORD_HASHERS,
    ]

    # The live server writes a response's headers and body in separate sends; on a keep-alive
    # connection (polar-sdk, the SDK, browsers) Nagle's algorithm then holds the body back until
    # the client's delayed ACK, ~40 ms per request. Sending at once changes only the latency.
    from django.test.testcases import QuietWSGIRequestHandler

    QuietWSGIRequestHandler.disable_nagle_algorithm = True

    TransactionTestCase._fixture_teardown = _flush_what_the_test_wrote


# --- the flush after each transactional test ------------------------------------------------------
# ~220 tests are transactional. After each, Django's flush TRUNCATEs all ~80 tables (new files for
# each table and index) and runs post_migrate, which re-creates the content types, permissions and
# staff groups the TRUNCATE has just deleted: ~2 s a test at load 4 on 2 cores. Most of these
# tests write a few small tables and none of post_migrate's. Here only the tables holding rows are
# emptied (DELETE when small, TRUNCATE when big), and post_migrate's rows are kept while they are
# exactly what its last run left (compared row by row): ~0.1 s. Otherwise — post_migrate's rows
# changed, the first flush of the session, a flush that is not the plain one — Django's own runs.
# Either way every table ends empty but for post_migrate's rows.

_django_fixture_teardown = TransactionTestCase._fixture_teardown
# database alias -> {table: fingerprint} of the tables holding rows right after Django's flush
_post_migrate_rows: dict[str, dict[str, str]] = {}


def _tables_with_rows(connection, cap: int) -> dict[str, int]:
    """The tables holding rows, each with its number of rows up to `cap`."""
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    with connection.cursor() as cursor:
        cursor.execute(
            " UNION ALL ".join(
                f"SELECT %s::text, (SELECT count(*) FROM (SELECT 1 FROM "
                f"{connection.ops.quote_name(table)} LIMIT {cap}) sample)"
                for table in tables
            ),
            list(tables),
        )
        return {table: rows for table, rows in cursor.fetchall() if rows}


def _fingerprints(connection, tables) -> dict[str, str]:
    """Each table's rows, summed up: their count and the md5 of all of them in order."""
    fingerprints = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(
                "SELECT count(*)::text || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text),"
                f" '')) FROM {connection.ops.quote_name(table)} t"
            )
            fingerprints[table] = cursor.fetchone()[0]
    return fingerprints


# a DELETE of up to this many rows costs less than a TRUNCATE (a new file for the table and for
# each of its indexes)
DELETE_UP_TO = 1000


def _emptied_keeping_post_migrate_rows(connection, kept: dict[str, str] | None) -> bool:
    """Empty the tables holding rows except post_migrate's; False (and maybe only part done)
    unless post_migrate's rows were, and still are, what it left."""
    if kept is None or _fingerprints(connection, kept) != kept:
        return False
    written = _tables_with_rows(connection, DELETE_UP_TO + 1)
    big = [table for table, rows in written.items() if rows > DELETE_UP_TO and table not in kept]
    small = [table for table, rows in written.items() if rows <= DELETE_UP_TO and table not in kept]
    try:
        if big:
            # CASCADE adds only the tables that reference these
            connection.ops.execute_sql_flush(
                connection.ops.sql_flush(no_style(), big, allow_cascade=True)
            )
        if small:
            # in one transaction: the foreign keys are checked at its commit (Django makes them
            # DEFERRABLE INITIALLY DEFERRED), when every referencing row is gone too
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                for table in small:
                    cursor.execute(f"DELETE FROM {connection.ops.quote_name(table)}")
    except DatabaseError:
        return False
    # A DELETE, unlike a TRUNCATE, does not wait for a transaction still writing (a live server's
    # request thread) and leaves what it commits; a cascade may have reached post_migrate's rows.
    left = _tables_with_rows(connection, 1)
    return set(left) <= set(kept) and _fingerprints(connection, kept) == kept


def _flush_what_the_test_wrote(self):
    if self.available_apps is not None or self.serialized_rollback:
        _django_fixture_teardown(self)
        return
    for alias in self._databases_names(include_mirrors=False):
        connection = connections[alias]
        if _emptied_keeping_post_migrate_rows(connection, _post_migrate_rows.get(alias)):
            continue
        # what Django's teardown runs for such a test
        call_command(
            "flush",
            verbosity=0,
            interactive=False,
            database=alias,
            reset_sequences=False,
            allow_cascade=False,
            inhibit_post_migrate=False,
        )
        _post_migrate_rows[alias] = _fingerprints(connection, _tables_with_rows(connection, 1))


@pytest.fixture(autouse=True, scope="session")
def _celery_in_memory():
    """Tasks enqueued by the code under test (delay_on_commit) go to an in-memory broker, not to
    the development broker under .data/ (a test that needs a real worker starts its own)."""
    from config.celery import app

    def reset_pool():
        # the producer pool holds the connection pool: both go, or later sends hit a closed pool
        if app._pool is not None:
            app._pool.force_close_all()
            app._pool = None
        app.amqp._producer_pool = None

    previous = app.conf.broker_url
    reset_pool()
    app.conf.broker_url = "memory://"
    yield
    reset_pool()
    app.conf.broker_url = previous


@pytest.fixture
def token_for():
    """Make an organization with a token: token_for("Org") -> (organization, secret)."""

    def make(org_name: str = "Acme"):
        api_token, secret = create_token(organization_name=org_name, label="tests")
        return api_token.organization, secret

    return make


@pytest.fixture
def org_token(db, token_for):
    return token_for("Acme")


@pytest.fixture
def organization(org_token):
    return org_token[0]


@pytest.fixture
def api(org_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {org_token[1]}")
    return client


@pytest.fixture
def live_org_token(transactional_db, token_for):
    return token_for("Live Org")


@pytest.fixture
def live_url(live_server):
    return live_server.url


@pytest.fixture
def polar(live_url, live_org_token):
    from polar.v2026_10 import Polar

    # Closing the client ends its keep-alive connections, which lets the live server's request
    # threads (and their database connections) finish before the test database is dropped.
    with Polar(live_org_token[1], base_url=live_url) as client:
        yield client


@pytest.fixture(scope="session")
def localstripe():
    """localstripe as a real process for the session (started by the first test that needs it):
    the Stripe stand-in the payments tests charge through the real `stripe` library."""
    from tests.localstripe import LocalStripe

    server = LocalStripe().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_default_cache():
    """Test databases roll back; the per-process cache would remember what they held."""
    yield
    cache.clear()
