import pytest

from customers.models import Customer

pytestmark = pytest.mark.django_db


def create(api, **body):
    return api.post("/v1/customers/", {"email": "ann@example.com", **body}, format="json")


def test_create_get_update_delete_by_id(api):
    created = create(
        api,
        external_id="ann",
        name="Ann",
        metadata={"plan": "pro", "seats": 3},
        billing_address={"country": "FR", "city": "Paris"},
        tax_id="FR123",
        locale="fr-FR",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["email"] == "ann@example.com"
    assert body["billing_address"]["country"] == "FR"
    assert body["tax_id"] == ["FR123", None]
    assert body["type"] == "individual"
    customer_id = body["id"]
    assert api.get(f"/v1/customers/{customer_id}").json()["name"] == "Ann"
    updated = api.patch(f"/v1/customers/{customer_id}", {"name": "Annie"}, format="json")
    assert updated.json()["name"] == "Annie"
    assert updated.json()["modified_at"] is not None
    assert api.delete(f"/v1/customers/{customer_id}").status_code == 204
    assert api.get(f"/v1/customers/{customer_id}").status_code == 404
    assert Customer.objects.get(pk=customer_id).deleted_at is not None  # soft delete


def test_by_external_id(api):
    create(api, external_id="ext-1")
    assert api.get("/v1/customers/external/ext-1").json()["email"] == "ann@example.com"
    assert (
        api.patch("/v1/customers/external/ext-1", {"name": "Z"}, format="json").json()["name"]
        == "Z"
    )
    assert api.get("/v1/customers/external/ext-1/state").json()["active_meters"] == []
    assert api.delete("/v1/customers/external/ext-1").status_code == 204
    assert api.get("/v1/customers/external/ext-1").status_code == 404


def test_email_unique_per_organization_case_insensitive(api):
    assert create(api).status_code == 201
    duplicate = create(api, email="ANN@example.com")
    assert duplicate.status_code == 422
    assert duplicate.json()["detail"][0]["loc"] == ["body", "email"]


def test_external_id_unique_and_immutable_once_set(api):
    first = create(api, external_id="same").json()
    clash = create(api, email="other@example.com", external_id="same")
    assert clash.status_code == 422
    assert clash.json()["detail"][0]["loc"] == ["body", "external_id"]
    change = api.patch(f"/v1/customers/{first['id']}", {"external_id": "different"}, format="json")
    assert change.status_code == 422
    assert change.json()["detail"][0]["loc"] == ["body", "external_id"]
    same = api.patch(f"/v1/customers/{first['id']}", {"external_id": "same"}, format="json")
    assert same.status_code == 200


def test_deleting_frees_email_and_external_id(api):
    first = create(api, external_id="reuse").json()
    api.delete(f"/v1/customers/{first['id']}")
    assert create(api, external_id="reuse").status_code == 201


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"email": "not-an-email"}, ["body", "email"]),
        ({"email": "a@example.com", "metadata": {"k": {"n": 1}}}, ["body", "metadata"]),
        ({"email": "a@example.com", "external_id": "x" * 257}, ["body", "external_id"]),
        (
            {"email": "a@example.com", "billing_address": {"country": "France"}},
            ["body", "billing_address", "country"],
        ),
        (
            {"email": "a@example.com", "organization_id": "7f0b3b7e-5e0f-4a4e-9d43-8c55f1f8a111"},
            ["body", "organization_id"],
        ),
        ({"email": "a@example.com", "surprise": 1}, ["body", "surprise"]),
        ({}, ["body", "email"]),
    ],
)
def test_create_validation(api, body, loc):
    response = api.post("/v1/customers/", body, format="json")
    assert response.status_code == 422, response.content
    assert loc in [item["loc"][: len(loc)] for item in response.json()["detail"]]
    assert Customer.objects.count() == 0


def test_list_filters_sorting_and_pagination(api):
    for i in range(12):
        create(
            api,
            email=f"c{i:02d}@example.com",
            name=f"Name {i:02d}",
            metadata={"tier": "gold" if i % 3 == 0 else "basic"},
        )
    page = api.get("/v1/customers/", {"limit": 5, "page": 3, "sorting": "email"}).json()
    assert page["pagination"] == {"total_count": 12, "max_page": 3}
    assert [c["email"] for c in page["items"]] == ["c10@example.com", "c11@example.com"]
    assert (
        api.get("/v1/customers/", {"email": "C03@example.com"}).json()["pagination"]["total_count"]
        == 1
    )
    assert api.get("/v1/customers/", {"query": "Name 1"}).json()["pagination"]["total_count"] == 2
    assert (
        api.get("/v1/customers/", {"metadata[tier]": "gold"}).json()["pagination"]["total_count"]
        == 4
    )
    bad = api.get("/v1/customers/", {"limit": 101})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]
    assert api.get("/v1/customers/", {"sorting": "nope"}).status_code == 422
