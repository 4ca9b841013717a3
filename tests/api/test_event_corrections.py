"""Usage corrections over the API (Meterline extension): POST and GET /v1/events/corrections, the
`correction` / `replaces` fields on events, canceled originals left out of the event list, and
polar-sdk still parsing every event (PostgreSQL store; the ClickHouse store's corrections are
tests/eventstore/test_corrections.py)."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.db import connection
from django.test.utils import CaptureQueriesContext
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from customers.models import Customer
from metering import customer_meters, meters
from metering.ingest import ingest_events
from metering.models import Event, EventCorrection, EventSource

URL = "/v1/events/corrections"
T0 = datetime(2025, 1, 5, 10, tzinfo=UTC)
RANGE = {
    "start_timestamp": "2025-01-01T00:00:00Z",
    "end_timestamp": "2025-02-01T00:00:00Z",
    "interval": "month",
}


def sum_meter(organization):
    return meters.create_meter(
        organization=organization,
        name="req value",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "req"}],
        },
        aggregation={"func": "sum", "property": "v"},
    )


def ingest_three(organization, customer="ada"):
    """r0, r1, r2: `req` events worth 10, 20 and 30, a minute apart."""
    ingest_events(
        organization=organization,
        events=[
            {
                "name": "req",
                "external_customer_id": customer,
                "external_id": f"{customer}-r{i}",
                "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
                "metadata": {"v": (i + 1) * 10},
            }
            for i in range(3)
        ],
    )
    return {
        e.external_id: e
        for e in Event.objects.filter(organization=organization, external_customer_id=customer)
    }


@pytest.fixture
def ada(organization):
    return Customer.objects.create(
        organization=organization, email="ada@example.com", external_id="ada"
    )


@pytest.fixture
def setup(organization, ada):
    meter = sum_meter(organization)
    return meter, ingest_three(organization)


def total(api, meter) -> int:
    response = api.get(f"/v1/meters/{meter.pk}/quantities", RANGE)
    assert response.status_code == 200, response.content
    return response.json()["total"]


def post(api, corrections):
    return api.post(URL, {"corrections": corrections}, format="json")


def raw_post(api, body: bytes, content_type="application/json"):
    return api.generic("POST", URL, body, content_type=content_type)


def problems(response) -> list[tuple]:
    assert response.status_code == 422, response.content
    return [(tuple(p["loc"]), p["type"]) for p in response.json()["detail"]]


def nothing_written(events: dict) -> None:
    assert EventCorrection.objects.count() == 0
    assert Event.objects.filter(source=EventSource.CANCELED).count() == 0
    assert Event.objects.filter(source=EventSource.USER).count() == len(events)


# --- POST: happy paths ----------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_by_id_takes_the_event_out_of_the_meter_at_once(api, setup, ada):
    meter, events = setup
    assert total(api, meter) == 60
    r0 = events["ada-r0"]
    response = post(api, [{"event_id": str(r0.pk), "action": "cancel", "reason": " sent twice "}])
    assert response.status_code == 200, response.content
    (correction,) = response.json()["corrections"]
    row = EventCorrection.objects.get()
    assert correction == {
        "id": str(row.pk),
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
        "event_id": str(r0.pk),
        "external_id": "ada-r0",
        "action": "cancel",
        "reason": "sent twice",
        "replacement_id": None,
        "customer_id": str(ada.pk),
        "event_timestamp": "2025-01-05T10:00:00Z",
        "actor": "api:tests",
    }
    assert total(api, meter) == 50
    r0.refresh_from_db()
    assert r0.source == EventSource.CANCELED
    assert Event.objects.filter(source=EventSource.USER).count() == 2


@pytest.mark.django_db
def test_replace_by_external_id_and_by_id(api, setup, ada):
    meter, events = setup
    response = post(
        api,
        [
            {
                "external_id": "ada-r1",
                "action": "replace",
                "reason": "wrong value",
                "metadata": {"v": 25},
            },
            # renamed out of the meter's filter: it no longer counts
            {"event_id": str(events["ada-r2"].pk), "action": "replace", "reason": "x", "name": "o"},
        ],
    )
    assert response.status_code == 200, response.content
    first, second = response.json()["corrections"]
    assert (first["event_id"], first["external_id"], first["action"]) == (
        str(events["ada-r1"].pk),
        "ada-r1",
        "replace",
    )
    assert (second["event_id"], second["external_id"]) == (str(events["ada-r2"].pk), "ada-r2")
    assert total(api, meter) == 10 + 25
    r1 = Event.objects.get(pk=first["replacement_id"])
    r2 = Event.objects.get(pk=second["replacement_id"])
    assert (r1.name, r1.metadata, r1.timestamp, r1.customer_id, r1.external_id) == (
        "req",
        {"v": 25},
        T0 + timedelta(minutes=1),
        ada.pk,
        None,
    )
    assert (r2.name, r2.metadata) == ("o", {"v": 30})
    # a replacement is a user event: it can be corrected in turn
    again = post(api, [{"event_id": str(r1.pk), "action": "cancel", "reason": "no"}])
    assert again.status_code == 200, again.content
    assert total(api, meter) == 10


@pytest.mark.django_db
def test_customer_state_changes_at_once(api, setup, ada):
    meter, events = setup
    customer_meters.grant_credits(customer=ada, meter=meter, units=100, timestamp=T0)
    state = api.get(f"/v1/customers/{ada.pk}/state").json()
    (before,) = state["active_meters"]
    assert (before["consumed_units"], before["balance"]) == (60, 40)
    post(api, [{"event_id": str(events["ada-r2"].pk), "action": "cancel", "reason": "test"}])
    (after,) = api.get(f"/v1/customers/{ada.pk}/state").json()["active_meters"]
    assert (after["consumed_units"], after["balance"]) == (30, 70)


# --- POST: errors -----------------------------------------------------------------------------


def cancel(event, **extra):
    return {"event_id": str(event.pk), "action": "cancel", "reason": "r", **extra}


@pytest.mark.django_db
def test_service_problems_are_422_under_body_corrections(api, setup, organization, ada):
    meter, events = setup
    r0, r1, r2 = events["ada-r0"], events["ada-r1"], events["ada-r2"]
    customer_meters.grant_credits(customer=ada, meter=meter, units=5, timestamp=T0)
    credit = Event.objects.get(source=EventSource.SYSTEM)
    response = post(
        api,
        [
            cancel(r0),
            {"event_id": str(uuid.uuid4()), "action": "cancel", "reason": "r"},
            cancel(credit),
            cancel(r0),  # the same event as correction 0
            {"event_id": str(r1.pk), "action": "undo", "reason": "r"},
            {"event_id": str(r1.pk), "action": "cancel", "reason": "  "},
            {"event_id": str(r1.pk), "external_id": "ada-r1", "action": "cancel", "reason": "r"},
            cancel(r1, name="n"),
            {"event_id": str(r2.pk), "action": "replace", "reason": "r"},
            cancel(r2, colour="red"),
            {"event_id": "nope", "action": "cancel", "reason": "r"},
            {"external_id": "", "action": "cancel", "reason": "r"},
            {"external_id": "missing", "action": "cancel", "reason": "r"},
            {"event_id": str(r2.pk), "action": "cancel", "reason": "r" * 501},
            "not an object",
        ],
    )
    assert problems(response) == [
        (("body", "corrections", 4, "action"), "enum"),
        (("body", "corrections", 5, "reason"), "missing"),
        (("body", "corrections", 6), "event_reference"),
        (("body", "corrections", 7, "name"), "value_error"),
        (("body", "corrections", 8), "missing"),
        (("body", "corrections", 9, "colour"), "extra_forbidden"),
        (("body", "corrections", 10, "event_id"), "uuid_parsing"),
        (("body", "corrections", 11, "external_id"), "string_type"),
        (("body", "corrections", 13, "reason"), "string_too_long"),
        (("body", "corrections", 14), "dict_type"),
    ]
    nothing_written(events)
    # with the shapes right, the lookups' problems
    response = post(
        api,
        [
            cancel(r0),
            {"event_id": str(uuid.uuid4()), "action": "cancel", "reason": "r"},
            cancel(credit),
            cancel(r0),
            {"external_id": "missing", "action": "cancel", "reason": "r"},
        ],
    )
    assert problems(response) == [
        (("body", "corrections", 1, "event_id"), "event_not_found"),
        (("body", "corrections", 2, "event_id"), "value_error"),
        (("body", "corrections", 3, "event_id"), "duplicate"),
        (("body", "corrections", 4, "external_id"), "event_not_found"),
    ]
    nothing_written(events)
    assert total(api, meter) == 60


@pytest.mark.django_db
def test_already_corrected_and_other_organizations_events(api, setup, token_for):
    meter, events = setup
    assert post(api, [cancel(events["ada-r0"])]).status_code == 200
    assert problems(post(api, [cancel(events["ada-r0"]), cancel(events["ada-r1"])])) == [
        (("body", "corrections", 0, "event_id"), "already_corrected")
    ]
    assert EventCorrection.objects.count() == 1
    other, _ = token_for("Other")
    theirs = ingest_three(other, customer="bob")
    assert problems(post(api, [cancel(theirs["bob-r0"])])) == [
        (("body", "corrections", 0, "event_id"), "event_not_found")
    ]
    by_external = {"external_id": "bob-r0", "action": "cancel", "reason": "r"}
    assert problems(post(api, [by_external])) == [
        (("body", "corrections", 0, "external_id"), "event_not_found")
    ]
    assert Event.objects.filter(source=EventSource.CANCELED).count() == 1
    assert total(api, meter) == 50


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, [(("body", "corrections"), "missing")]),
        ({"corrections": []}, [(("body", "corrections"), "too_short")]),
        ({"corrections": {"event_id": "x"}}, [(("body", "corrections"), "list_type")]),
        ({"corrections": None}, [(("body", "corrections"), "list_type")]),
        (
            {"corrections": [], "events": [], "dry_run": True},
            [(("body", "dry_run"), "extra_forbidden"), (("body", "events"), "extra_forbidden")],
        ),
        ([{"event_id": "x"}], [(("body",), "dict_type")]),
        ("corrections", [(("body",), "dict_type")]),
    ],
)
def test_body_shape_problems(api, setup, body, expected):
    _, events = setup
    response = api.post(URL, body, format="json")
    assert problems(response) == expected
    nothing_written(events)


@pytest.mark.django_db
def test_too_many_corrections(api, setup):
    _, events = setup
    many = [cancel(events["ada-r0"])] * 1001
    assert problems(post(api, many)) == [(("body", "corrections"), "too_long")]
    nothing_written(events)


@pytest.mark.django_db
def test_bad_metadata_and_nul_characters(api, setup):
    _, events = setup
    r0, r1 = events["ada-r0"], events["ada-r1"]
    replace = {"event_id": str(r0.pk), "action": "replace", "reason": "r"}
    response = post(api, [{**replace, "metadata": {"x": {"deep": 1}}}])
    assert problems(response)[0][0] == ("body", "corrections", 0, "metadata", "x")
    response = raw_post(
        api,
        b'{"corrections": [{"event_id": "%s", "action": "replace", "reason": "r", '
        b'"metadata": {"x": NaN}}]}' % str(r0.pk).encode(),
    )
    assert problems(response)[0][0] == ("body", "corrections", 0, "metadata", "x")
    response = post(
        api,
        [
            cancel(r0, reason="a\x00b"),
            {"external_id": "ada\x00", "action": "cancel", "reason": "r"},
            {**replace, "event_id": str(r1.pk), "name": "n\x00", "metadata": {"k\x00": 1}},
        ],
    )
    assert problems(response) == [
        (("body", "corrections", 0, "reason"), "string_nul"),
        (("body", "corrections", 1, "external_id"), "string_nul"),
        (("body", "corrections", 2, "name"), "string_nul"),
        (("body", "corrections", 2, "metadata", "k\x00"), "string_nul"),
    ]
    nothing_written(events)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"corrections": [', 400, "BadRequest"),
        (b"", 400, "BadRequest"),
        (b"\xff\xfe", 400, "BadRequest"),
        (b"[" * 100_000, 400, "BadRequest"),
    ],
)
def test_malformed_bodies(api, setup, body, status, error):
    _, events = setup
    response = raw_post(api, body)
    assert (response.status_code, response.json()["error"]) == (status, error)
    nothing_written(events)


@pytest.mark.django_db
def test_lone_surrogate_wrong_content_type_and_too_big(api, setup, settings):
    _, events = setup
    body = b'{"corrections": [{"external_id": "ada-r0", "action": "cancel", "reason": "\\ud800"}]}'
    response = raw_post(api, body)
    assert problems(response) == [(("body", "corrections", 0, "reason"), "string_unicode")]
    response = raw_post(api, b"corrections=1", content_type="application/x-www-form-urlencoded")
    assert (response.status_code, response.json()["error"]) == (415, "UnsupportedMediaType")
    settings.INGEST_MAX_BODY_BYTES = 100
    big = json.dumps(
        {"corrections": [{"external_id": "ada-r0", "action": "cancel", "reason": "r" * 200}]}
    )
    response = raw_post(api, big.encode())
    assert (response.status_code, response.json()["error"]) == (413, "RequestTooLarge")
    nothing_written(events)


@pytest.mark.django_db
def test_a_token_is_required(setup):
    _, events = setup
    response = APIClient().post(URL, {"corrections": []}, format="json")
    assert response.status_code == 401
    assert APIClient().get(URL).status_code == 401
    nothing_written(events)


# --- GET /v1/events/corrections ---------------------------------------------------------------


@pytest.mark.django_db
def test_list_newest_first_with_filters_and_pages(api, setup, organization, ada):
    _, events = setup
    bob = Customer.objects.create(
        organization=organization, email="bob@example.com", external_id="bob"
    )
    bobs = ingest_three(organization, customer="bob")
    first = post(api, [cancel(events["ada-r0"])]).json()["corrections"][0]
    second = post(
        api,
        [
            cancel(bobs["bob-r0"]),
            {"external_id": "ada-r1", "action": "replace", "reason": "r", "name": "x"},
        ],
    ).json()["corrections"]
    listing = api.get(URL).json()
    assert listing["pagination"] == {"total_count": 3, "max_page": 1}
    # newest first, id breaking a tie
    newest = sorted(second, key=lambda c: (c["created_at"], c["id"]), reverse=True)
    assert listing["items"] == [*newest, first]
    by_ada = api.get(URL, {"customer_id": str(ada.pk)}).json()
    assert [c["event_id"] for c in by_ada["items"]] == [
        str(events["ada-r1"].pk),
        str(events["ada-r0"].pk),
    ]
    by_bob = api.get(URL, {"customer_id": str(bob.pk)}).json()["items"]
    assert [c["external_id"] for c in by_bob] == ["bob-r0"]
    by_event = api.get(URL, {"event_id": [str(events["ada-r0"].pk), str(bobs["bob-r0"].pk)]}).json()
    assert by_event["pagination"]["total_count"] == 2
    page = api.get(URL, {"limit": 2, "page": 2}).json()
    assert page["items"] == [first]
    assert page["pagination"] == {"total_count": 3, "max_page": 2}
    response = api.get(URL, {"customer_id": "nope", "event_id": "x"})
    assert problems(response) == [
        (("query", "customer_id"), "uuid_parsing"),
        (("query", "event_id"), "uuid_parsing"),
    ]


@pytest.mark.django_db
def test_list_is_the_organizations_own(api, setup, token_for):
    _, events = setup
    post(api, [cancel(events["ada-r0"])])
    _, secret = token_for("Other")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert other.get(URL).json()["pagination"]["total_count"] == 0


# --- the event wire format ----------------------------------------------------------------------


@pytest.mark.django_db
def test_event_list_and_detail_fields(api, setup, ada):
    _, events = setup
    r0, r1 = events["ada-r0"], events["ada-r1"]
    post(api, [cancel(r0)])
    replaced = post(
        api, [{"event_id": str(r1.pk), "action": "replace", "reason": "fix", "metadata": {"v": 1}}]
    ).json()["corrections"][0]
    r0_row = EventCorrection.objects.get(event_id=r0.pk)
    r1_row = EventCorrection.objects.get(event_id=r1.pk)

    listing = api.get("/v1/events/").json()
    assert listing["pagination"]["total_count"] == 2  # r2 and r1's replacement
    fields = {e["id"]: (e["source"], e["correction"], e["replaces"]) for e in listing["items"]}
    assert fields == {
        str(events["ada-r2"].pk): ("user", None, None),
        replaced["replacement_id"]: ("user", None, str(r1.pk)),
    }

    everything = api.get("/v1/events/", {"include_canceled": "true"}).json()
    assert everything["pagination"]["total_count"] == 4
    by_id = {e["id"]: e for e in everything["items"]}
    assert by_id[str(r0.pk)]["source"] == "user"
    assert by_id[str(r0.pk)]["correction"] == {
        "id": str(r0_row.pk),
        "action": "cancel",
        "reason": "r",
        "replacement_id": None,
        "created_at": r0_row.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert by_id[str(r1.pk)]["correction"] == {
        "id": str(r1_row.pk),
        "action": "replace",
        "reason": "fix",
        "replacement_id": replaced["replacement_id"],
        "created_at": r1_row.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert by_id[str(r1.pk)]["replaces"] is None
    # canceled originals go out as user events: `source=user` finds them with include_canceled
    users = api.get("/v1/events/", {"include_canceled": "1", "source": "user"}).json()
    assert users["pagination"]["total_count"] == 4
    assert api.get("/v1/events/", {"source": "user"}).json()["pagination"]["total_count"] == 2
    assert api.get("/v1/events/", {"include_canceled": "false"}).json()["pagination"] == {
        "total_count": 2,
        "max_page": 1,
    }
    assert problems(api.get("/v1/events/", {"include_canceled": "maybe"})) == [
        (("query", "include_canceled"), "bool_parsing")
    ]

    detail = api.get(f"/v1/events/{r0.pk}").json()
    assert (detail["source"], detail["correction"]["id"]) == ("user", str(r0_row.pk))
    replacement = api.get(f"/v1/events/{replaced['replacement_id']}").json()
    assert (replacement["correction"], replacement["replaces"]) == (None, str(r1.pk))
    plain = api.get(f"/v1/events/{events['ada-r2'].pk}").json()
    assert (plain["correction"], plain["replaces"]) == (None, None)


@pytest.mark.django_db
def test_event_names_leave_canceled_events_out(api, setup, ada):
    _, events = setup
    post(api, [cancel(events["ada-r0"]), cancel(events["ada-r1"]), cancel(events["ada-r2"])])
    names = api.get("/v1/events/names").json()["items"]
    assert {n["source"] for n in names} == {"user"}
    per_customer = api.get("/v1/events/names", {"customer_id": str(ada.pk)}).json()
    assert per_customer["items"] == []  # the customer's only events are canceled
    assert per_customer["pagination"]["total_count"] == 0


@pytest.mark.django_db
def test_the_event_list_reads_corrections_in_one_query(api, organization, ada):
    sum_meter(organization)

    def load(prefix: str, n: int):
        ingest_events(
            organization=organization,
            events=[
                {
                    "name": "req",
                    "external_customer_id": "ada",
                    "external_id": f"{prefix}{i}",
                    "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
                    "metadata": {"v": 1},
                }
                for i in range(n)
            ],
        )
        corrections = [
            {"external_id": f"{prefix}{i}", "action": "cancel", "reason": "r"}
            for i in range(0, n, 2)
        ] + [
            {"external_id": f"{prefix}{i}", "action": "replace", "reason": "r", "name": "x"}
            for i in range(1, n, 2)
        ]
        assert post(api, corrections).status_code == 200

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = api.get("/v1/events/", {"include_canceled": "true", "limit": 100})
        assert response.status_code == 200
        return len(captured.captured_queries), len(response.json()["items"])

    load("a", 2)
    small, small_items = queries()
    load("b", 30)
    large, large_items = queries()
    assert (small_items, large_items) == (3, 48)  # originals + a replacement per odd one
    assert small == large
    with CaptureQueriesContext(connection) as captured:
        api.get("/v1/events/", {"include_canceled": "true", "limit": 100})
    correction_reads = [
        q for q in captured.captured_queries if "metering_eventcorrection" in q["sql"]
    ]
    assert len(correction_reads) == 1


# --- OpenAPI ----------------------------------------------------------------------------------


def test_openapi_documents_corrections():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = schema["paths"]["/v1/events/corrections"]
    assert operations["post"]["operationId"] == "events_corrections_create"
    assert operations["get"]["operationId"] == "events_corrections_list"
    assert [p["name"] for p in operations["get"]["parameters"]] == [
        "customer_id",
        "event_id",
        "limit",
        "page",
    ]
    components = schema["components"]["schemas"]
    request = operations["post"]["requestBody"]["content"]["application/json"]["schema"]
    item = components[request["$ref"].rsplit("/", 1)[1]]["properties"]["corrections"]["items"]
    assert set(components[item["$ref"].rsplit("/", 1)[1]]["properties"]) == {
        "event_id",
        "external_id",
        "action",
        "reason",
        "name",
        "metadata",
    }
    assert set(components["EventCorrection"]["properties"]) == {
        "id",
        "created_at",
        "event_id",
        "external_id",
        "action",
        "reason",
        "replacement_id",
        "customer_id",
        "event_timestamp",
        "actor",
    }
    event = components["Event"]["properties"]
    assert event["replaces"]["nullable"] is True
    assert event["correction"]["nullable"] is True
    assert set(components["EventCorrectionState"]["properties"]) == {
        "id",
        "action",
        "reason",
        "replacement_id",
        "created_at",
    }
    listing = schema["paths"]["/v1/events/"]["get"]["parameters"]
    (include,) = [p for p in listing if p["name"] == "include_canceled"]
    assert include["schema"] == {"type": "boolean"}


# --- polar-sdk --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_polar_sdk_parses_events_after_corrections(polar, live_url, live_org_token):
    organization, secret = live_org_token
    Customer.objects.create(organization=organization, email="ada@example.com", external_id="ada")
    events = ingest_three(organization)
    response = requests.post(
        f"{live_url}{URL}",
        json={
            "corrections": [
                {"external_id": "ada-r0", "action": "cancel", "reason": "dup"},
                {"external_id": "ada-r1", "action": "replace", "reason": "v", "metadata": {"v": 2}},
            ]
        },
        # no keep-alive: the server's request thread (and its database connection) ends now
        headers={"Authorization": f"Bearer {secret}", "Connection": "close"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    replacement_id = response.json()["corrections"][1]["replacement_id"]
    listed = polar.events.list(limit=100)
    assert listed.pagination.total_count == 2
    assert {e.id for e in listed.items} == {str(events["ada-r2"].pk), replacement_id}
    assert all(e.source == "user" for e in listed.items)
    canceled = polar.events.get(str(events["ada-r0"].pk))
    assert (canceled.id, canceled.source, canceled.name) == (
        str(events["ada-r0"].pk),
        "user",
        "req",
    )
    replacement = polar.events.get(replacement_id)
    assert (replacement.metadata, replacement.timestamp) == ({"v": 2}, "2025-01-05T10:01:00Z")
    names = polar.events.list_names(limit=100)
    assert [(n.name, n.source) for n in names.items] == [("req", "user")]
