"""A lost database connection is a 503 with Retry-After — JSON under /v1/, a short HTML page
elsewhere — never a bare 500; the next request gets a new connection and succeeds.

Real parts: pytest-django's live server (a threaded WSGI server) and PostgreSQL's
pg_terminate_backend on the very connection serving the request. To kill it mid-request, the test
holds an exclusive lock on the table the request reads; the request's backend waits on it, the
test finds that backend in pg_stat_activity and terminates it."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from django.db import connection

from customers.models import Customer, Organization

pytestmark = pytest.mark.django_db(transaction=True)


def _dsn() -> str:
    params = connection.get_connection_params()
    return psycopg.conninfo.make_conninfo(
        **{key: value for key, value in params.items() if key in ("host", "port", "user", "dbname")}
    )


def _kill_the_request_waiting_on(table: str, request) -> httpx.Response:
    """Send `request` while `table` is locked, terminate the backend it waits in, and return the
    response."""
    with (
        psycopg.connect(_dsn(), autocommit=False) as locker,
        # another connection looks: within the locker's transaction pg_stat_activity is frozen
        psycopg.connect(_dsn(), autocommit=True) as watcher,
        ThreadPoolExecutor(1) as pool,
    ):
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        pending = pool.submit(request)
        deadline = time.monotonic() + 20
        waiting = []
        while not waiting and time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            ).fetchall()
            time.sleep(0.05)
        assert len(waiting) == 1, "the request never reached the locked table"
        (terminated,) = watcher.execute(
            "SELECT pg_terminate_backend(%s)", [waiting[0][0]]
        ).fetchone()
        assert terminated is True
        locker.rollback()
        return pending.result(timeout=30)


@pytest.fixture
def tenant(token_for):
    organization, secret = token_for("Acme")
    Customer.objects.create(organization=organization, email="a@example.com", external_id="a")
    return organization, secret


def test_api_request_whose_connection_is_killed_gets_503_json(live_server, tenant):
    organization, secret = tenant
    headers = {"Authorization": f"Bearer {secret}"}
    url = f"{live_server.url}/v1/customers/"
    with httpx.Client(headers=headers, timeout=30) as client:
        response = _kill_the_request_waiting_on(
            Customer._meta.db_table, lambda: client.get(url)
        )
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {
            "error": "ServiceUnavailable",
            "detail": "The database is unavailable; retry the request.",
        }
        # the broken connection was dropped: the retry is served
        retry = client.get(url)
        assert retry.status_code == 200
        assert [item["external_id"] for item in retry.json()["items"]] == ["a"]


def test_page_request_whose_connection_is_killed_gets_503_html(live_server, tenant):
    organization, _ = tenant
    url = f"{live_server.url}/portal/{organization.slug}/sign-in"
    with httpx.Client(timeout=30) as client:
        response = _kill_the_request_waiting_on(
            Organization._meta.db_table, lambda: client.get(url)
        )
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.headers["Content-Type"].startswith("text/html")
        assert "<h1>Temporarily unavailable</h1>" in response.text
        assert client.get(url).status_code == 200
