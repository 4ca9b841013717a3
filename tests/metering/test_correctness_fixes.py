"""Defects of the metering core, each pinned by a test that failed before its fix: per-request
admin numbers, bounded sorting by computed numbers, out-of-range timestamps, meter deletion,
stale customer writes, exact arithmetic, whole-unit credits, and the demo seed's DEBUG guard."""

import decimal
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.test import override_settings

from customers.models import Customer
from customers.services import create_customer, update_customer
from metering import aggregation, customer_meters, meters
from metering.admin.customer_meters import CustomerMeterAdmin
from metering.admin.meter_editor import compute_preview
from metering.api import meter_views
from metering.errors import InvalidCredit
from metering.ingest import ingest_events
from metering.models import Meter, MeterRollup, MeterUniqueRollup

pytestmark = pytest.mark.django_db

ALL = {"conjunction": "and", "clauses": []}
WIDE = [(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))]


def sum_meter(organization, prop="v", func="sum"):
    return meters.create_meter(
        organization=organization,
        name=f"{func} {prop}",
        filter=ALL,
        aggregation={"func": func, "property": prop},
    )


def send(organization, external_id, *values, prop="v"):
    ingest_events(
        organization=organization,
        events=[
            {"name": "x", "external_customer_id": external_id, "metadata": {prop: value}}
            for value in values
        ],
    )


# 4 -----------------------------------------------------------------------------------------------


def test_customer_meter_admin_numbers_belong_to_their_row_and_keep_no_state(
    admin_client, organization
):
    meter = sum_meter(organization)
    for name, values in (("a", (1, 2)), ("b", (100,))):
        create_customer(organization=organization, email=f"{name}@x.io", external_id=name)
        send(organization, name, *values)
    instance = admin.site._registry[meter.customer_meters.model]
    assert isinstance(instance, CustomerMeterAdmin)
    before = dict(vars(instance))
    page = admin_client.get("/admin/metering/customermeter/").content.decode()
    assert vars(instance) == before  # nothing cached on the shared instance
    rows = {
        row.split("</a></th>")[0].rsplit(">", 1)[-1]: row
        for row in page.split("<tr>")[1:]
        if "@x.io" in row
    }
    # rounded for reading, exact in the tooltip
    consumed = '<td class="field-consumed"><span class="ml-num" title="{0}">{0}</span></td>'
    assert consumed.format(3) in rows["a@x.io (a)"]
    assert consumed.format(100) in rows["b@x.io (b)"]


# 5 -----------------------------------------------------------------------------------------------


def test_sorting_by_balance_takes_constant_queries_and_is_bounded(
    api, organization, django_assert_max_num_queries, monkeypatch
):
    meter = sum_meter(organization)
    for i in range(12):
        create_customer(organization=organization, email=f"c{i}@x.io", external_id=f"c{i}")
        send(organization, f"c{i}", i)
    with django_assert_max_num_queries(8):
        response = api.get("/v1/customer-meters/", {"sorting": "-balance", "limit": 5})
    assert response.status_code == 200
    assert [item["balance"] for item in response.json()["items"]] == [0, -1, -2, -3, -4]
    monkeypatch.setattr(meter_views, "SORT_BY_NUMBERS_LIMIT", 10)
    response = api.get("/v1/customer-meters/", {"sorting": "balance"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "sorting"]
    narrowed = api.get("/v1/customer-meters/", {"sorting": "balance", "customer_id": []})
    assert narrowed.status_code == 422
    assert meter.customer_meters.count() == 12


# 6, and the one timestamp rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00Z", "1899-12-31T23:59:59Z"]
)
def test_out_of_range_timestamps_are_a_422_everywhere(api, organization, raw):
    meter = sum_meter(organization)
    response = api.post(
        "/v1/events/ingest",
        {"events": [{"name": "x", "external_customer_id": "a", "timestamp": raw}]},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events", 0, "timestamp"]
    quantities = api.get(
        f"/v1/meters/{meter.pk}/quantities",
        {"start_timestamp": raw, "end_timestamp": "2026-01-01T00:00:00Z", "interval": "day"},
    )
    assert quantities.status_code == 422
    assert quantities.json()["detail"][0]["loc"] == ["query", "start_timestamp"]
    events = api.get("/v1/events/", {"start_timestamp": raw})
    assert events.status_code == 422


# 7 -----------------------------------------------------------------------------------------------


def test_deleting_a_meter_in_the_admin_deletes_its_rollups(admin_client, organization):
    meter = sum_meter(organization, prop="model", func="unique")
    create_customer(organization=organization, email="a@x.io", external_id="a")
    send(organization, "a", "x", "y", prop="model")
    assert MeterRollup.objects.filter(meter=meter).exists()
    assert MeterUniqueRollup.objects.filter(meter=meter).count() == 2
    response = admin_client.post(f"/admin/metering/meter/{meter.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Meter.objects.filter(pk=meter.pk).exists()
    assert not MeterRollup.objects.filter(meter_id=meter.pk).exists()
    assert not MeterUniqueRollup.objects.filter(meter_id=meter.pk).exists()


# 8 -----------------------------------------------------------------------------------------------


def test_customer_update_never_writes_back_a_stale_first_event(organization):
    customer = create_customer(organization=organization, email="a@x.io", external_id="a")
    stale = Customer.objects.get(pk=customer.pk)
    assert stale.first_user_event_at is None
    send(organization, "a", 1)  # ingestion sets first_user_event_at meanwhile
    update_customer(customer=stale, changes={"name": "Ada"})
    fresh = Customer.objects.get(pk=customer.pk)
    assert fresh.name == "Ada"
    assert fresh.first_user_event_at is not None


# 9 -----------------------------------------------------------------------------------------------


def test_fractional_filter_values_are_refused_and_integral_ones_kept_exact(api):
    clause = {"property": "latency", "operator": "gte"}
    for value, status in (("12.5", 422), ("12.0", 201), ("1e3", 201)):
        # the number as written on the wire, not as a Python float
        raw = json.dumps(
            {
                "name": f"m{value}",
                "filter": {"conjunction": "and", "clauses": [{**clause, "value": "NUMBER"}]},
                "aggregation": {"func": "count"},
            }
        ).replace('"NUMBER"', value)
        response = api.post("/v1/meters/", raw, content_type="application/json")
        assert response.status_code == status, (value, response.content)
        if status == 422:
            assert response.json()["detail"][0]["loc"][-1] == "value"
            assert response.json()["detail"][0]["type"] == "filter_value_fractional"
        else:
            stored = Meter.objects.get(name=f"m{value}").filter["clauses"][0]
            assert stored == {**clause, "value": int(decimal.Decimal(value))}
            assert type(stored["value"]) is int


def test_python_side_arithmetic_is_exact_for_huge_values(organization):
    # the largest number an event may carry (below 10^40, 20 decimal places) and the smallest
    huge = decimal.Decimal("9" * 39 + "." + "9" * 20)
    tiny = decimal.Decimal("0." + "0" * 19 + "1")
    values = [huge, tiny, decimal.Decimal("1.1"), decimal.Decimal("0.2")]
    expected = decimal.Decimal("1" + "0" * 38 + "1.3")
    assert aggregation.combine("sum", values) == expected
    events = [
        {"name": "x", "source": "user", "timestamp": datetime.now(UTC), "metadata": {"v": v}}
        for v in values
    ]
    partial = aggregation.python_partial(ALL, {"func": "sum", "property": "v"}, events)
    assert partial.numeric_sum == expected
    assert customer_meters.balance_of(5, expected) == decimal.Decimal("-" + "9" * 38 + "6.3")


def test_credits_must_be_whole_units(organization):
    meter = sum_meter(organization)
    customer = create_customer(organization=organization, email="a@x.io", external_id="a")
    for units in (2.9, decimal.Decimal("2.5"), True, "3"):
        with pytest.raises(InvalidCredit):
            customer_meters.grant_credits(customer=customer, meter=meter, units=units)
    customer_meters.grant_credits(customer=customer, meter=meter, units=3)
    assert customer_meters.numbers_for(meter, customer).credited_units == 3


def test_admin_preview_average_equals_the_api_average(organization):
    meter = sum_meter(organization, func="avg")
    create_customer(organization=organization, email="a@x.io", external_id="a")
    send(organization, "a", 1, 1, 2)  # 4/3: a repeating decimal, so precision shows
    preview = compute_preview(
        organization_id=organization.pk,
        filter_=ALL,
        aggregation={"func": "avg", "property": "v"},
        now=datetime.now(UTC) + timedelta(minutes=1),
    )
    _, total = aggregation.compute(meter, buckets=WIDE)
    expected = aggregation.final_value("avg", total)
    assert expected == decimal.Decimal("1." + "3" * 39)  # 40 significant digits
    assert preview.top_customers[0][2] == expected


# 10 ----------------------------------------------------------------------------------------------


@override_settings(DEBUG=False)
def test_seed_demo_refuses_to_run_without_debug(django_user_model):
    with pytest.raises(CommandError, match="DEBUG=1"):
        call_command("seed_demo", events=10, no_progress=True)
    assert not django_user_model.objects.filter(username="demo").exists()
