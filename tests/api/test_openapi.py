"""The served OpenAPI schema is valid, and schema-driven fuzzing finds no server errors."""

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate


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


@pytest.fixture
def fuzz_target(live_server, token_for, transactional_db):
    from customers.services import create_customer

    organization, secret = token_for("Fuzz")
    create_customer(organization=organization, email="known@example.com", external_id="known")
    return live_server.url, {"Authorization": f"Bearer {secret}"}


@fuzzed.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, fuzz_target):
    base_url, headers = fuzz_target
    response = case.call(base_url=base_url, headers=headers)
    assert response.status_code < 500, (
        case.method,
        case.formatted_path,
        case.body,
        response.text[:500],
    )
