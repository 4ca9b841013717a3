"""A token never sees another organization's objects: 404, not 403, for every id."""

import pytest
from rest_framework.test import APIClient

from customers.services import create_customer
from metering.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def intruder(token_for):
    _, secret = token_for("Intruder")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_every_id_of_another_organization_is_404(api, organization, intruder):
    customer = create_customer(
        organization=organization, email="v@example.com", external_id="victim"
    )
    api.post(
        "/v1/events/ingest",
        {"events": [{"name": "secret", "external_customer_id": "victim"}]},
        format="json",
    )
    event = Event.objects.get()
    paths = [
        f"/v1/customers/{customer.pk}",
        f"/v1/customers/{customer.pk}/state",
        "/v1/customers/external/victim",
        "/v1/customers/external/victim/state",
        f"/v1/events/{event.pk}",
    ]
    for path in paths:
        response = intruder.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "ResourceNotFound"
    for path in paths[:1] + paths[2:3]:
        assert intruder.patch(path, {"name": "pwned"}, format="json").status_code == 404
        assert intruder.delete(path).status_code == 404
    customer.refresh_from_db()
    assert customer.name != "pwned" and customer.deleted_at is None
    assert intruder.get("/v1/events/").json()["items"] == []
    assert intruder.get("/v1/events/names").json()["items"] == []
    assert intruder.get("/v1/customers/").json()["items"] == []
    assert intruder.get("/v1/events/", {"customer_id": str(customer.pk)}).json()["items"] == []
