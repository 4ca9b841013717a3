"""Bad input gets a 4xx JSON answer, never a 500, and nothing is written."""

import pytest
from rest_framework.test import APIClient

from metering.models import Event

pytestmark = pytest.mark.django_db


def raw_post(api, path, body: bytes, content_type="application/json"):
    return api.generic("POST", path, body, content_type=content_type)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"events": [', 400),
        (b"\xff\xfe", 400),
        (b"", 400),
        (b"[1, 2]", 422),
        (b'"just a string"', 422),
        (b"null", 422),
        (b'{"events": [{"name": "a", "external_customer_id": "u", "metadata": {"x": NaN}}]}', 422),
        (
            b'{"events": [{"name": "a", "external_customer_id": "u", "metadata": {"x": Infinity}}]}',
            422,
        ),
        (
            b'{"events": [{"name": "a", "external_customer_id": "u", "metadata": {"x": -Infinity}}]}',
            422,
        ),
        (
            b'{"events": [{"name": "a", "external_customer_id": "u", "metadata": {"x": {"y": 1}}}]}',
            422,
        ),
        (b'{"events": [{"name": "' + b"n" * 100_000 + b'", "external_customer_id": "u"}]}', 422),
        (
            b'{"events": [{"name": "a", "external_customer_id": "u", "metadata": {"x": 1e999999}}]}',
            422,
        ),
        (b"[" * 100_000, 400),
    ],
)
def test_ingest_bad_bodies(api, body, status):
    response = raw_post(api, "/v1/events/ingest", body)
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert Event.objects.count() == 0


def test_nan_is_reported_at_its_field(api):
    body = b'{"events": [{"name": "a", "external_customer_id": "u", "metadata": {"x": NaN}}]}'
    detail = raw_post(api, "/v1/events/ingest", body).json()["detail"]
    assert detail[0]["loc"] == ["body", "events", 0, "metadata", "x"]


def test_wrong_content_type_is_415(api):
    response = raw_post(
        api, "/v1/events/ingest", b"events=1", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert response.json()["error"] == "UnsupportedMediaType"


@pytest.mark.parametrize("path", ["/v1/customers/", "/v1/customers/external/x"])
def test_malformed_json_on_other_endpoints(api, path):
    method = "POST" if path.endswith("/") else "PATCH"
    response = api.generic(method, path, b"{not json", content_type="application/json")
    assert response.status_code == 400 or response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


def test_customer_nan_and_nested_values(api):
    response = api.generic(
        "POST",
        "/v1/customers/",
        b'{"email": "a@example.com", "metadata": {"x": NaN}}',
        content_type="application/json",
    )
    assert response.status_code == 422
    response = api.post(
        "/v1/customers/", {"email": "a@example.com", "name": "n" * 10_000}, format="json"
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer nope", "Bearer abc.def", "Token whatever", "Basic dXNlcjpwYXNz"],
)
def test_missing_or_bad_token_is_401_json(header):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    for method, path in [
        ("get", "/v1/customers/"),
        ("get", "/v1/events/"),
        ("post", "/v1/events/ingest"),
    ]:
        response = getattr(client, method)(
            path, {"events": []} if method == "post" else None, format="json"
        )
        assert response.status_code == 401, (header, path)
        assert response.json()["error"] == "Unauthorized"
        assert response["WWW-Authenticate"] == "Bearer"


def test_revoked_and_expired_tokens_are_rejected(org_token):
    from datetime import timedelta

    from django.utils import timezone

    from customers.models import APIToken

    organization, secret = org_token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/v1/customers/").status_code == 200
    token = APIToken.objects.get(organization=organization)
    assert token.last_used_at is not None
    token.expiry_date = timezone.now() - timedelta(seconds=1)
    token.save()
    assert client.get("/v1/customers/").status_code == 401
    token.expiry_date = None
    token.revoked = True
    token.save()
    assert client.get("/v1/customers/").status_code == 401


def test_token_is_stored_only_as_a_hash(org_token):
    from customers.models import APIToken

    organization, secret = org_token
    token = APIToken.objects.get(organization=organization)
    assert secret not in token.hashed_key and secret not in token.id
    assert token.hashed_key.startswith("sha512$")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events/not-a-uuid",
        "/v1/customers/not-a-uuid",
        "/v1/nothing-here",
        "/v1/events/?start_timestamp=yesterday",
        "/v1/events/?customer_id=nope",
        "/v1/events/?page=0",
        "/v1/events/?limit=abc",
        "/v1/events/?depth=9",
        "/v1/events/?source=robot",
        "/v1/events/?metadata=x",
    ],
)
def test_bad_query_and_path_values(api, path):
    response = api.get(path)
    assert 400 <= response.status_code < 500, path
    assert response["Content-Type"].startswith("application/json")


def test_last_used_is_not_written_on_every_request(org_token, django_assert_max_num_queries):
    organization, secret = org_token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    client.get("/v1/customers/")  # first use records last_used_at
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        client.get("/v1/customers/")
    assert not any(
        "UPDATE" in q["sql"] and "apitoken" in q["sql"] for q in queries.captured_queries
    )


@pytest.mark.parametrize(
    "event",
    [
        {"name": "a\u0000b", "external_customer_id": "u"},
        {"name": "a", "external_customer_id": "u\u0000"},
        {"name": "a", "external_customer_id": "u", "metadata": {"k": "v\u0000"}},
        {"name": "a", "external_customer_id": "u", "metadata": {"k\u0000": "v"}},
        {"name": "a", "external_customer_id": "u", "external_id": "\u0000"},
    ],
)
def test_nul_characters_in_ingest_are_422(api, event):
    response = api.post("/v1/events/ingest", {"events": [event]}, format="json")
    assert response.status_code == 422
    assert Event.objects.count() == 0


def test_nul_characters_in_query_are_422(api):
    response = api.get("/v1/events/names", {"query": "a\x00"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "query"]
