"""The served OpenAPI schema is valid, and schema-driven fuzzing finds no server errors."""

import pytest
import requests
import schemathesis
from django.core.management.color import no_style
from django.db import connection
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from tests.support import AppServer


def generated_schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.mark.django_db
def test_schema_is_served_and_valid(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    import json

    schema = json.loads(response.content)
    validate(schema)
    paths = set(schema["paths"])
    for expected in [
        "/v1/events/ingest",
        "/v1/events/",
        "/v1/events/{id}",
        "/v1/events/names",
        "/v1/customers/",
        "/v1/customers/{key}",
        "/v1/customers/external/{key}",
        "/v1/customers/{key}/state",
        "/v1/customers/external/{key}/state",
        "/v1/customer-sessions/",
    ]:
        assert expected in paths, expected
    ingest = schema["paths"]["/v1/events/ingest"]["post"]
    assert "requestBody" in ingest and "200" in ingest["responses"]
    assert schema["components"]["securitySchemes"]["access_token"]["scheme"] == "bearer"


fuzzed = schemathesis.openapi.from_dict(generated_schema())


def empty_tables() -> list[str]:
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    with connection.cursor() as cursor:
        return [
            table
            for table in tables
            if not cursor.execute(f'SELECT EXISTS (SELECT 1 FROM "{table}")').fetchone()[0]
        ]


@pytest.fixture(scope="module")
def fuzz_target(django_db_setup, django_db_blocker):
    """One organization (with a known customer) and one gunicorn for every operation, reached over
    one keep-alive connection: the server's database sessions persist (CONN_MAX_AGE), as in
    production, and no test flushes the database — the rows the fuzz commits accumulate across
    operations, and afterwards the tables that were empty before are emptied again."""
    from customers.services import create_customer
    from customers.tokens import create_token

    with django_db_blocker.unblock():
        before = empty_tables()
    server = AppServer(
        kind="gunicorn",
        workers=2,
        env={
            "CONN_MAX_AGE": "60",
            # thousands of requests a minute with one token: counted, never refused
            "API_RATE_LIMIT": "1000000/m",
            "CELERY_BROKER_URL": "memory://",  # the tasks a meter enqueues go nowhere
        },
    )
    try:
        with django_db_blocker.unblock():
            api_token, secret = create_token(organization_name="Fuzz", label="tests")
            create_customer(
                organization=api_token.organization, email="known@example.com", external_id="known"
            )
            server.start()
        with requests.Session() as session:
            yield server.url, {"Authorization": f"Bearer {secret}"}, session
    finally:
        server.stop()
        with django_db_blocker.unblock():
            connection.ops.execute_sql_flush(connection.ops.sql_flush(no_style(), before))


# The fuzz commits through the server; `django_db` gives this test the test database (and its
# place among the database tests) without it touching the database itself.
@pytest.mark.django_db
@fuzzed.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, fuzz_target):
    base_url, headers, session = fuzz_target
    response = case.call(base_url=base_url, headers=headers, session=session)
    assert response.status_code < 500, (
        case.method,
        case.formatted_path,
        case.body,
        response.text[:500],
    )
