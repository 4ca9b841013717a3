"""Shared fixtures: organizations with tokens, an authenticated API client, and a live HTTP
server (pytest-django's threaded live server) driven by the real polar-sdk client."""

import pytest
from django.core.cache import cache
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
