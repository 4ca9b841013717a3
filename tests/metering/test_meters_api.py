"""Meters API validation (422 naming the spot), quantities parameters, events filtered by meter,
admin credit/reset actions."""

from datetime import UTC, datetime, timedelta

import pytest

from customers.services import create_customer
from metering import customer_meters, meters
from metering.models import CustomerMeter

pytestmark = pytest.mark.django_db

COUNT = {"func": "count"}


def body(**overrides):
    data = {
        "name": "calls",
        "filter": {"conjunction": "and", "clauses": []},
        "aggregation": COUNT,
    }
    data.update(overrides)
    return data


def locs(response):
    return [tuple(item["loc"]) for item in response.json()["detail"]]


def test_filter_errors_name_the_spot(api):
    response = api.post(
        "/v1/meters/",
        body(
            filter={
                "conjunction": "and",
                "clauses": [
                    {"property": "name", "operator": "eq", "value": "ok"},
                    {"property": "model", "operator": "eq", "value": {"nested": 1}},
                    {"property": "x", "operator": "regex", "value": "a"},
                    {"conjunction": "xor", "clauses": []},
                ],
            }
        ),
        format="json",
    )
    assert response.status_code == 422
    assert set(locs(response)) == {
        ("body", "filter", "clauses", 1, "value"),
        ("body", "filter", "clauses", 2, "operator"),
        ("body", "filter", "clauses", 3, "conjunction"),
    }


def test_too_deep_too_many_and_bad_aggregation(api):
    deep = {"conjunction": "and", "clauses": []}
    for _ in range(6):
        deep = {"conjunction": "and", "clauses": [deep]}
    response = api.post("/v1/meters/", body(filter=deep), format="json")
    assert response.status_code == 422 and "deep" in response.json()["detail"][0]["msg"]
    many = {
        "conjunction": "or",
        "clauses": [{"property": "a", "operator": "eq", "value": i} for i in range(101)],
    }
    response = api.post("/v1/meters/", body(filter=many), format="json")
    assert response.status_code == 422 and "100" in response.json()["detail"][0]["msg"]
    response = api.post(
        "/v1/meters/", body(aggregation={"func": "median", "property": "x"}), format="json"
    )
    assert locs(response) == [("body", "aggregation", "func")]
    response = api.post("/v1/meters/", body(aggregation={"func": "sum"}), format="json")
    assert locs(response) == [("body", "aggregation", "property")]
    response = api.post("/v1/meters/", body(name="ab", organization_id="x"), format="json")
    assert set(locs(response)) == {("body", "name"), ("body", "organization_id")}
    response = api.post(
        "/v1/meters/",
        b'{"name": "nan", "filter": {"conjunction": "and", "clauses": [{"property": "a", '
        b'"operator": "eq", "value": NaN}]}, "aggregation": {"func": "count"}}',
        content_type="application/json",
    )
    assert locs(response) == [("body", "filter", "clauses", 0, "value")]


def test_bad_ids_are_404(api):
    assert api.get("/v1/meters/not-a-uuid").status_code == 404
    assert api.get("/v1/customer-meters/123").status_code == 404
    assert api.get("/v1/meters/00000000-0000-0000-0000-000000000000/quantities").status_code == 404


def test_quantities_parameters(api):
    meter = api.post("/v1/meters/", body(), format="json").json()
    url = f"/v1/meters/{meter['id']}/quantities"
    ok = {"start_timestamp": "2025-01-01T00:00:00Z", "end_timestamp": "2025-01-08T00:00:00Z"}
    response = api.get(url, {**ok, "interval": "fortnight", "timezone": "Mars/Olympus"})
    assert set(locs(response)) == {("query", "interval"), ("query", "timezone")}
    response = api.get(url, {"start_timestamp": "yesterday", "interval": "day"})
    assert set(locs(response)) == {("query", "start_timestamp"), ("query", "end_timestamp")}
    response = api.get(url, {**ok, "interval": "day", "customer_aggregation_function": "median"})
    assert locs(response) == [("query", "customer_aggregation_function")]
    response = api.get(
        url,
        {
            "start_timestamp": "2020-01-01T00:00:00Z",
            "end_timestamp": "2025-01-01T00:00:00Z",
            "interval": "hour",
        },
    )
    assert response.status_code == 422 and "2000" in response.json()["detail"][0]["msg"]
    response = api.get(url, {**ok, "interval": "week"})  # 2025-01-01 is a Wednesday
    stamps = [q["timestamp"] for q in response.json()["quantities"]]
    assert len(stamps) == 2 and stamps[1].startswith("2025-01-06T00:00:00")
    response = api.get(url, {**ok, "interval": "day", "timezone": "Asia/Kolkata"})
    stamps = [q["timestamp"] for q in response.json()["quantities"]]
    assert len(stamps) == 8 and stamps[1].startswith("2025-01-01T18:30:00")


def test_quantities_in_kolkata_and_metadata_filter(api, organization):
    create_customer(organization=organization, email="k@x.io", external_id="k")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    events = [
        {
            "name": "e",
            "external_customer_id": "k",
            "timestamp": (start + timedelta(minutes=m)).isoformat(),
            "metadata": {"region": "eu" if index % 2 else "us"},
        }
        for index, m in enumerate(
            (0, 10, 1100, 1110, 1200, 1500)
        )  # 18:20, 18:30 UTC straddle Kolkata midnight
    ]
    assert api.post("/v1/events/ingest", {"events": events}, format="json").status_code == 200
    meter = api.post("/v1/meters/", body(), format="json").json()
    url = f"/v1/meters/{meter['id']}/quantities"
    params = {
        "start_timestamp": "2025-01-01T00:00:00Z",
        "end_timestamp": "2025-01-03T00:00:00Z",
        "interval": "day",
        "timezone": "Asia/Kolkata",
    }
    result = api.get(url, params).json()
    assert [q["quantity"] for q in result["quantities"]] == [3, 3, 0]
    assert result["total"] == 6
    result = api.get(url, {**params, "metadata[region]": "us"}).json()
    assert [q["quantity"] for q in result["quantities"]] == [2, 1, 0]  # us: minutes 0, 1100 | 1200


def test_events_list_by_meter_and_filter(api, organization):
    create_customer(organization=organization, email="f@x.io", external_id="f")
    api.post(
        "/v1/events/ingest",
        {
            "events": [
                {"name": "a", "external_customer_id": "f", "metadata": {"n": 5}},
                {"name": "a", "external_customer_id": "f", "metadata": {"n": "5"}},
                {"name": "b", "external_customer_id": "f", "metadata": {"n": 7}},
            ]
        },
        format="json",
    )
    meter = api.post(
        "/v1/meters/",
        body(
            filter={
                "conjunction": "and",
                "clauses": [{"property": "n", "operator": "gte", "value": 5}],
            }
        ),
        format="json",
    ).json()
    items = api.get("/v1/events/", {"meter_id": meter["id"]}).json()["items"]
    assert sorted(i["name"] for i in items) == ["a", "b"]
    flt = '{"conjunction":"and","clauses":[{"property":"n","operator":"eq","value":"5"}]}'
    items = api.get("/v1/events/", {"filter": flt}).json()["items"]
    assert [i["metadata"]["n"] for i in items] == ["5"]
    assert locs(api.get("/v1/events/", {"filter": "{nope"})) == [("query", "filter")]
    assert locs(api.get("/v1/events/", {"meter_id": "zzz"})) == [("query", "meter_id")]


def test_archive_and_update(api):
    meter = api.post("/v1/meters/", body(), format="json").json()
    url = f"/v1/meters/{meter['id']}"
    archived = api.patch(url, {"is_archived": True}, format="json").json()
    assert archived["archived_at"] is not None
    assert [m["id"] for m in api.get("/v1/meters/", {"is_archived": "true"}).json()["items"]] == [
        meter["id"]
    ]
    assert api.patch(url, {"is_archived": False}, format="json").json()["archived_at"] is None
    assert locs(api.patch(url, {"unit": "custom"}, format="json")) == [("body", "custom_label")]
    assert locs(api.patch(url, {"bogus": 1}, format="json")) == [("body", "bogus")]


def test_admin_credit_and_reset_actions(client, organization, django_user_model):
    admin = django_user_model.objects.create_superuser("staff", "s@x.io", "pw")
    client.force_login(admin)
    customer = create_customer(organization=organization, email="a@x.io", external_id="a")
    meter = meters.create_meter(
        organization=organization,
        name="calls",
        filter={"conjunction": "and", "clauses": []},
        aggregation=COUNT,
    )
    customer_meter = customer_meters.ensure_customer_meter(customer=customer, meter=meter)
    url = "/admin/metering/customermeter/"
    page = client.post(url, {"action": "grant_credits", "_selected_action": [customer_meter.pk]})
    assert page.status_code == 200 and b"units" in page.content  # the intermediate form
    client.post(
        url,
        {
            "action": "grant_credits",
            "_selected_action": [customer_meter.pk],
            "apply": "1",
            "units": "25",
            "reason": "goodwill",
        },
    )
    assert customer_meters.numbers_for(meter, customer).credited_units == 25
    client.post(
        url,
        {
            "action": "reset_meters",
            "_selected_action": [customer_meter.pk],
            "apply": "1",
            "reason": "new period",
        },
    )
    assert customer_meters.numbers_for(meter, customer).credited_units == 0
    assert CustomerMeter.objects.count() == 1
    assert client.get(url).status_code == 200
