"""The admin meter editor: readable filter, validation errors on the field, an exact preview
before saving, saving through the meters services, backfill progress."""

import json
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from customers.models import Customer, Organization
from metering import backfill, customer_meters, ingest, meters
from metering.admin.meter_editor import compute_preview, readable_filter
from metering.models import Meter, MeterState

FILTER = {
    "conjunction": "and",
    "clauses": [
        {"property": "name", "operator": "eq", "value": "llm.completion"},
        {
            "conjunction": "or",
            "clauses": [
                {"property": "model", "operator": "eq", "value": "gpt-4o"},
                {"property": "tokens", "operator": "gte", "value": 1000},
            ],
        },
    ],
}


def days_ago(days: int) -> str:
    day = timezone.now().astimezone(UTC).date() - timedelta(days=days)
    return datetime.combine(day, time(12), tzinfo=UTC).isoformat()


def llm(customer, model, tokens, days):
    return {
        "name": "llm.completion",
        "external_customer_id": customer,
        "timestamp": days_ago(days),
        "metadata": {"model": model, "tokens": tokens},
    }


@pytest.fixture
def org(db):
    organization = Organization.objects.create(name="Acme")
    for ref in ("c1", "c2", "c3"):
        Customer.objects.create(organization=organization, external_id=ref, email=f"{ref}@x.io")
    ingest.ingest_events(
        organization=organization,
        events=[
            llm("c1", "gpt-4o", 10, 1),
            llm("c1", "gpt-4o", 20, 2),
            llm("c2", "gpt-4o", 30, 1),
            llm("c2", "o3", 1500, 3),  # matches through tokens >= 1000
            llm("c2", "o3", 5, 3),  # no match
            llm("c3", "gpt-4o", "12", 1),  # matches; a string takes no part in sum/avg
            llm("ghost", "gpt-4o", 7, 1),  # matches, no customer with that external id yet
            {"name": "api.request", "external_customer_id": "c1", "timestamp": days_ago(1)},
            llm("c1", "gpt-4o", 1000, 40),  # outside the 30 days
        ],
    )
    # another organization's events never count
    other = Organization.objects.create(name="Other")
    Customer.objects.create(organization=other, external_id="c1", email="c1@other.io")
    ingest.ingest_events(organization=other, events=[llm("c1", "gpt-4o", 99, 1)])
    return organization


def form_data(org, **overrides):
    data = {
        "organization": str(org.pk),
        "name": "LLM tokens",
        "filter": json.dumps(FILTER),
        "aggregation_func": "sum",
        "aggregation_property": "tokens",
        "unit": "scalar",
        "custom_label": "",
        "custom_multiplier": "",
    }
    data.update(overrides)
    return data


def test_readable_filter():
    assert (
        readable_filter(FILTER) == 'name = "llm.completion" AND (model = "gpt-4o" OR tokens ≥ 1000)'
    )
    assert readable_filter({"conjunction": "or", "clauses": []}) == "every event"
    assert (
        readable_filter(
            {
                "conjunction": "or",
                "clauses": [
                    {"property": "_llm.model", "operator": "like", "value": "gpt"},
                    {"property": "beta", "operator": "ne", "value": True},
                ],
            }
        )
        == '_llm.model contains "gpt" OR beta ≠ true'
    )


def test_preview_numbers_exact(staff_client, org):
    response = staff_client.post(reverse("admin:metering_meter_add"), form_data(org, _preview="1"))
    assert response.status_code == 200
    preview = response.context["preview"]
    assert preview is not None and not preview.error
    assert preview.matching_events == 6
    assert preview.linked_events == 5
    assert preview.unlinked_events == 1
    top = [(c.external_id, events, value) for c, events, value, _ in preview.top_customers]
    assert top == [("c2", 2, Decimal(1530)), ("c1", 2, Decimal(30)), ("c3", 1, Decimal(0))]
    assert len(preview.days) == 30
    by_day = {day: (events, value) for day, events, value in preview.days}
    today = timezone.now().astimezone(UTC).date()
    assert by_day[today - timedelta(days=1)] == (4, Decimal(47))
    assert by_day[today - timedelta(days=2)] == (1, Decimal(20))
    assert by_day[today - timedelta(days=3)] == (1, Decimal(1500))
    assert sum(events for events, _ in by_day.values()) == 6
    html = response.content.decode()
    assert (
        "name = &quot;llm.completion&quot; AND (model = &quot;gpt-4o&quot; OR tokens ≥ 1000)"
        in html
    )
    assert "1,530" in html
    assert "<svg" in html
    # nothing was saved
    assert not Meter.objects.exists()


@pytest.mark.parametrize(
    ("func", "prop", "expected"),
    [
        ("count", "", [("c1", 2), ("c2", 2), ("c3", 1)]),
        ("avg", "tokens", [("c2", Decimal(765)), ("c1", Decimal(15)), ("c3", Decimal(0))]),
        ("min", "tokens", [("c2", Decimal(30)), ("c1", Decimal(10)), ("c3", Decimal(0))]),
        ("max", "tokens", [("c2", Decimal(1500)), ("c1", Decimal(20)), ("c3", Decimal(0))]),
        ("unique", "model", [("c2", 2), ("c1", 1), ("c3", 1)]),
    ],
)
def test_preview_every_function(org, func, prop, expected):
    aggregation = {"func": func, **({"property": prop} if prop else {})}
    preview = compute_preview(organization_id=org.pk, filter_=FILTER, aggregation=aggregation)
    got = [(c.external_id, value) for c, _, value, _ in preview.top_customers]
    assert sorted(got, key=lambda item: item[0]) == sorted(
        [(ref, Decimal(v)) for ref, v in expected], key=lambda item: item[0]
    )
    assert got[0][1] == max(Decimal(v) for _, v in expected)


def test_preview_htmx_fragment(staff_client, org):
    response = staff_client.post(
        reverse("admin:metering_meter_preview_add"), form_data(org), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="meter-preview"' in html
    assert '<span class="figure" id="preview-matching">6</span>' in html
    assert "<html" not in html
    assert not Meter.objects.exists()


def test_invalid_filter_shows_error_at_the_clause(staff_client, org):
    bad = json.loads(json.dumps(FILTER))
    bad["clauses"][1]["clauses"][0]["operator"] = "equals"
    for extra in ({"_preview": "1"}, {"_save": "Save"}):
        response = staff_client.post(
            reverse("admin:metering_meter_add"), form_data(org, filter=json.dumps(bad), **extra)
        )
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert list(errors) == ["filter"]
        assert errors["filter"][0].startswith("clauses[1].clauses[0].operator: Input should be")
        assert "clauses[1].clauses[0].operator" in response.content.decode()
        assert response.context["preview"] is None
    assert not Meter.objects.exists()


def test_other_invalid_inputs(staff_client, org):
    response = staff_client.post(
        reverse("admin:metering_meter_add"),
        form_data(org, filter="{not json", aggregation_func="sum", aggregation_property=""),
    )
    errors = response.context["adminform"].form.errors
    assert "filter" in errors
    assert errors["aggregation_property"] == ["Field required"]
    deep = {"conjunction": "and", "clauses": []}
    node = deep
    for _ in range(6):
        child = {"conjunction": "and", "clauses": []}
        node["clauses"].append(child)
        node = child
    response = staff_client.post(
        reverse("admin:metering_meter_add"), form_data(org, filter=json.dumps(deep))
    )
    assert "nest at most 5 levels" in str(response.context["adminform"].form.errors["filter"])
    assert not Meter.objects.exists()


def test_saving_creates_the_meter_through_the_service(staff_client, org):
    response = staff_client.post(reverse("admin:metering_meter_add"), form_data(org))
    assert response.status_code == 302, response.context["adminform"].form.errors
    meter = Meter.objects.get()
    assert meter.organization == org
    assert meter.name == "LLM tokens"
    assert meter.filter == FILTER
    assert meter.aggregation == {"func": "sum", "property": "tokens"}
    # the organization has events: the service starts a backfill
    assert meter.state == MeterState.BACKFILLING

    changelist = staff_client.get(reverse("admin:metering_meter_changelist"))
    html = changelist.content.decode()
    assert "Backfilling 0%" in html
    assert "sum(tokens)" in html

    backfill.backfill(meter.pk)
    change = staff_client.get(reverse("admin:metering_meter_change", args=[meter.pk]))
    html = change.content.decode()
    assert "Ready" in html
    assert "model = &quot;gpt-4o&quot; OR tokens ≥ 1000" in html
    # the backfilled rollups agree with the preview's total for c2 (raw path)
    c2 = Customer.objects.get(organization=org, external_id="c2")
    numbers = customer_meters.numbers_for(meter, c2)
    assert numbers.consumed_units == Decimal(1530 + 0)


def test_backfill_progress_on_the_list(staff_client, org):
    meter = Meter.objects.create(
        organization=org,
        name="Tokens",
        filter=FILTER,
        aggregation={"func": "count"},
        state=MeterState.BACKFILLING,
        backfill_events_total=200,
        backfill_events_done=50,
    )
    html = staff_client.get(reverse("admin:metering_meter_changelist")).content.decode()
    assert "Backfilling 25%" in html
    assert "(50 / 200 events)" in html
    html = staff_client.get(
        reverse("admin:metering_meter_change", args=[meter.pk])
    ).content.decode()
    assert "Backfilling 25%" in html


def test_changing_the_filter_rebuilds(staff_client, org):
    meter = meters.create_meter(
        organization=org, name="Tokens", filter=FILTER, aggregation={"func": "count"}
    )
    backfill.backfill(meter.pk)
    meter.refresh_from_db()
    version = meter.definition_version
    data = form_data(org, aggregation_func="count", aggregation_property="")
    data.pop("organization")
    narrower = {"conjunction": "and", "clauses": FILTER["clauses"][:1]}
    data["filter"] = json.dumps(narrower)
    response = staff_client.post(reverse("admin:metering_meter_change", args=[meter.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    meter.refresh_from_db()
    assert meter.filter == narrower
    assert meter.definition_version == version + 1
    assert meter.state == MeterState.BACKFILLING


def test_preview_on_the_change_page_uses_the_meters_organization(staff_client, org):
    meter = meters.create_meter(
        organization=org, name="Tokens", filter=FILTER, aggregation={"func": "count"}
    )
    data = form_data(org, aggregation_func="count", aggregation_property="", _preview="1")
    data.pop("organization")  # read-only on the change page
    url = reverse("admin:metering_meter_change", args=[meter.pk])
    response = staff_client.post(url, data)
    assert response.status_code == 200
    preview = response.context["preview"]
    assert preview.matching_events == 6
    top = [(c.external_id, v) for c, _, v, _ in preview.top_customers]
    # c1 and c2 tie at 2 (their order follows the customer id); c3 has 1
    assert sorted(top[:2]) == [("c1", Decimal(2)), ("c2", Decimal(2))]
    assert top[2] == ("c3", Decimal(1))
    fragment = staff_client.post(
        reverse("admin:metering_meter_preview_change", args=[meter.pk]), data
    )
    assert '<span class="figure" id="preview-matching">6</span>' in fragment.content.decode()
    meter.refresh_from_db()
    assert meter.aggregation == {"func": "count"} and meter.definition_version == 1


def structured(org, conjunction, rows, **overrides):
    """The editor's clause rows as a browser posts them (with a blank row at the end)."""
    data = form_data(org, filter="", filter_structured="1", filter_conjunction=conjunction)
    for index, (prop, operator, value) in enumerate([*rows, ("", "eq", "")]):
        data[f"filter_property_{index}"] = prop
        data[f"filter_operator_{index}"] = operator
        data[f"filter_value_{index}"] = value
    data.update(overrides)
    return data


def test_clause_rows_make_the_filter_with_typed_values(staff_client, org):
    rows = [("name", "eq", "llm.completion"), ("tokens", "gte", "1000"), ("code", "eq", '"200"')]
    response = staff_client.post(reverse("admin:metering_meter_add"), structured(org, "and", rows))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Meter.objects.get().filter == {
        "conjunction": "and",
        "clauses": [
            {"property": "name", "operator": "eq", "value": "llm.completion"},
            {"property": "tokens", "operator": "gte", "value": 1000},  # a number
            {"property": "code", "operator": "eq", "value": "200"},  # quoted: text
        ],
    }
    # the change page shows the clauses as rows again (quoted text stays quoted)
    page = staff_client.get(reverse("admin:metering_meter_change", args=[Meter.objects.get().pk]))
    html = page.content.decode()
    assert 'name="filter_property_1" value="tokens"' in html
    assert 'name="filter_value_2" value="&quot;200&quot;"' in html
    assert 'name="filter_property_3" value=""' in html  # blank rows to add clauses


def test_clause_rows_are_validated_on_the_server(staff_client, org):
    rows = [("name", "gt", "llm.completion"), ("", "eq", "ignored")]
    response = staff_client.post(
        reverse("admin:metering_meter_add"),
        structured(org, "and", rows, filter_operator_0="between"),
    )
    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors["filter"]
    assert message.startswith("clauses[0].operator: Input should be")
    assert not Meter.objects.exists()


def test_nested_groups_are_edited_as_json(staff_client, org):
    meter = meters.create_meter(
        organization=org, name="Tokens", filter=FILTER, aggregation={"func": "count"}
    )
    html = staff_client.get(reverse("admin:metering_meter_change", args=[meter.pk])).content
    html = html.decode()
    assert 'name="filter_use_raw" value="1" checked' in html  # FILTER has a nested group
    assert "This filter has nested groups" in html
    # raw JSON chosen: the rows are ignored
    data = structured(org, "or", [("name", "eq", "x")], filter_use_raw="1")
    data["filter"] = json.dumps(FILTER)
    response = staff_client.post(reverse("admin:metering_meter_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Meter.objects.get(name="LLM tokens").filter == FILTER
