"""POST /v1/customer-sessions/ in Polar's shape, read by the real polar-sdk client."""

from datetime import datetime, timedelta

import pytest
from polar.v2026_10 import Polar
from polar.v2026_10.errors import HTTPValidationError
from rest_framework.test import APIClient

from portal.models import SignInToken, SignInTokenKind

from .conftest import build_world


@pytest.fixture
def live_world(transactional_db, token_for):
    return build_world(token_for)


def test_polar_sdk_creates_sessions_by_id_and_external_id(live_server, live_world):
    alice = live_world.alice
    with Polar(live_world.acme.secret, base_url=live_server.url) as polar:
        by_id = polar.customer_sessions.create(
            customer_id=str(alice.pk), return_url="https://app.example/back"
        )
        by_external = polar.customer_sessions.create(external_customer_id="alice")

    assert by_id.customer_id == str(alice.pk)
    assert by_id.customer.id == str(alice.pk)
    assert by_id.customer.email == "alice@acme-inc.example"
    assert by_id.return_url == "https://app.example/back"
    assert by_external.return_url is None
    assert by_external.customer_id == str(alice.pk)
    for session in (by_id, by_external):
        assert session.token.startswith("ml_cst_") and len(session.token) == 7 + 43
        assert session.customer_portal_url == (
            f"{live_server.url}/portal/acme-inc/session?customer_session_token={session.token}"
        )
        created = datetime.fromisoformat(session.created_at)
        expires = datetime.fromisoformat(session.expires_at)
        assert expires - created == timedelta(hours=1)
        assert SignInToken.objects.get(pk=session.id).kind == SignInTokenKind.API_SESSION
    assert by_id.token != by_external.token
    # only the digest is stored
    assert not SignInToken.objects.filter(token_digest=by_id.token).exists()


def test_unknown_or_foreign_customer_is_a_validation_error(live_server, live_world):
    with Polar(live_world.acme.secret, base_url=live_server.url) as polar:
        for kwargs, field in [
            ({"customer_id": str(live_world.carol.pk)}, "customer_id"),  # Globex's customer
            ({"external_customer_id": "carol"}, "external_customer_id"),
            ({"customer_id": "00000000-0000-4000-8000-000000000000"}, "customer_id"),
        ]:
            with pytest.raises(HTTPValidationError) as caught:
                polar.customer_sessions.create(**kwargs)
            assert caught.value.status_code == 422
            detail = caught.value.error.detail
            assert [(d.loc, d.msg) for d in detail] == [
                (["body", field], "Customer does not exist.")
            ]
    assert not SignInToken.objects.exists()


@pytest.fixture
def acme_api(world):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.acme.secret}")
    return client


@pytest.mark.parametrize(
    "body, loc",
    [
        ({}, ["body", "customer_id"]),
        ({"customer_id": "not-a-uuid"}, ["body", "customer_id"]),
        ({"customer_id": 12}, ["body", "customer_id"]),
        ({"external_customer_id": ""}, ["body", "external_customer_id"]),
        ({"external_customer_id": "x" * 257}, ["body", "external_customer_id"]),
        ({"external_customer_id": "alice", "return_url": "not a url"}, ["body", "return_url"]),
        (
            {"external_customer_id": "alice", "member_id": "00000000-0000-4000-8000-000000000000"},
            ["body", "member_id"],
        ),
        (
            {"external_customer_id": "alice", "external_member_id": "m1"},
            ["body", "external_member_id"],
        ),
        ({"external_customer_id": "alice", "customer_id": None}, ["body", "customer_id"]),
        ({"external_customer_id": "alice", "surprise": 1}, ["body", "surprise"]),
    ],
)
def test_bad_input_is_422_naming_the_field(acme_api, body, loc):
    response = acme_api.post("/v1/customer-sessions/", body, format="json")
    assert response.status_code == 422, response.content
    assert loc in [item["loc"] for item in response.json()["detail"]]
    assert not SignInToken.objects.exists()


def test_both_ids_is_422(acme_api, world):
    response = acme_api.post(
        "/v1/customer-sessions/",
        {"customer_id": str(world.alice.pk), "external_customer_id": "alice"},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_null_members_are_accepted(acme_api, world):
    response = acme_api.post(
        "/v1/customer-sessions/",
        {"external_customer_id": "alice", "member_id": None, "external_member_id": None},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["customer"]["external_id"] == "alice"


def test_requires_an_organization_token(world):
    response = APIClient().post(
        "/v1/customer-sessions/", {"external_customer_id": "alice"}, format="json"
    )
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"


def test_deleted_customer_gets_no_session(acme_api, world):
    from customers.services import delete_customer

    delete_customer(customer=world.bob)
    response = acme_api.post(
        "/v1/customer-sessions/", {"external_customer_id": "bob"}, format="json"
    )
    assert response.status_code == 422
