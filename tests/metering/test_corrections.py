"""Usage corrections in the metering layer (PostgreSQL store): the original is kept and marked,
every meter reads the corrected usage at once — rollups included — and bad requests write
nothing. The billing side is tests/billing/test_usage_corrections.py."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from auditlog.models import LogEntry

from customers.models import Customer
from metering import corrections, meters, queries
from metering.errors import InvalidCorrection
from metering.ingest import ingest_events
from metering.models import Event, EventCorrection, EventName, EventSource

pytestmark = pytest.mark.django_db

T0 = datetime(2024, 1, 5, 10, tzinfo=UTC)
WHOLE = ((datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),)


def meter(org, func, prop=None):
    aggregation = {"func": func, **({"property": prop} if prop else {})}
    return meters.create_meter(
        organization=org,
        name=f"req {func}",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "req"}],
        },
        aggregation=aggregation,
    )


@pytest.fixture
def ada(organization):
    return Customer.objects.create(organization=organization, external_id="ada")


@pytest.fixture
def ten(organization, ada):
    ingest_events(
        organization=organization,
        events=[
            {
                "name": "req",
                "external_customer_id": "ada",
                "timestamp": (T0 + timedelta(minutes=i * 7)).isoformat(),
                "external_id": f"r{i}",
                "metadata": {"v": (i + 1) * 10, "model": f"m{i % 4}"},
            }
            for i in range(10)
        ],
    )


def value(m, customer) -> Decimal:
    window = queries.Window("k", m, customer.pk, WHOLE)
    return queries.window_values([window])["k"].value


def test_cancel_and_replace_reflect_in_every_aggregation_at_once(organization, ada, ten):
    funcs = {
        "count": meter(organization, "count"),
        "sum": meter(organization, "sum", "v"),
        "avg": meter(organization, "avg", "v"),
        "min": meter(organization, "min", "v"),
        "max": meter(organization, "max", "v"),
        "unique": meter(organization, "unique", "model"),
    }
    before = {func: value(m, ada) for func, m in funcs.items()}
    assert before == {
        "count": 10,
        "sum": 550,
        "avg": 55,
        "min": 10,
        "max": 100,
        "unique": 4,
    }
    made = corrections.correct_events(
        organization=organization,
        corrections=[
            {
                "external_id": "r9",
                "action": "replace",
                "reason": "peak mis-measured",
                "metadata": {"v": 5, "model": "m0"},
            },
            {"external_id": "r0", "action": "cancel", "reason": "test traffic"},
            {"external_id": "r1", "action": "cancel", "reason": "test traffic"},
        ],
        actor="staff:test",
    )
    # r9 (v 100, m1) → v 5, m0; r0 (10, m0) and r1 (20, m1) gone: v = 30..90 and 5
    assert {func: value(m, ada) for func, m in funcs.items()} == {
        "count": 8,
        "sum": 425,
        "avg": Decimal("53.125"),
        "min": 5,
        "max": 90,
        "unique": 4,  # m0 (replacement, r4, r8), m2, m3, m1 (r5)
    }
    originals = Event.objects.filter(external_id__in=["r0", "r1", "r9"])
    assert {e.source for e in originals} == {EventSource.CANCELED}
    replace, *_ = made
    replacement = Event.objects.get(pk=replace.replacement_id)
    r9 = Event.objects.get(external_id="r9")
    assert (replacement.timestamp, replacement.customer_id, replacement.arrival_txid) == (
        r9.timestamp,
        ada.pk,
        r9.arrival_txid,
    )
    assert replacement.source == EventSource.USER and replacement.external_id is None
    assert replace.original["metadata"] == {"v": 100, "model": "m1"}
    assert replace.replacement == {"name": "req", "metadata": {"v": 5, "model": "m0"}}
    # every correction is in the audit log, also when no staff member made it
    entries = LogEntry.objects.filter(object_pk__in=[str(c.pk) for c in made])
    assert sorted((e.additional_data["action"], e.additional_data["caller"]) for e in entries) == [
        ("event canceled: test traffic", "staff:test"),
        ("event canceled: test traffic", "staff:test"),
        ("event replaced: peak mis-measured", "staff:test"),
    ]


def test_a_bad_correction_writes_nothing(organization, ada, ten):
    count = meter(organization, "count")
    with pytest.raises(InvalidCorrection) as caught:
        corrections.correct_events(
            organization=organization,
            corrections=[
                {"external_id": "r0", "action": "cancel", "reason": "ok"},
                {"external_id": "nope", "action": "cancel", "reason": "x"},
                {"external_id": "r2", "action": "cancel", "reason": " "},
                {"external_id": "r3", "action": "replace", "reason": "x"},
                {"event_id": "not-a-uuid", "action": "cancel", "reason": "x"},
                {"external_id": "r4", "action": "drop", "reason": "x"},
            ],
            actor="api:test",
        )
    assert {(tuple(i["loc"]), i["type"]) for i in caught.value.items} == {
        ((2, "reason"), "missing"),
        ((3,), "missing"),
        ((4, "event_id"), "uuid_parsing"),
        ((5, "action"), "enum"),
    }
    assert value(count, ada) == 10 and not EventCorrection.objects.exists()
    with pytest.raises(InvalidCorrection) as caught:
        corrections.correct_events(
            organization=organization,
            corrections=[
                {"external_id": "r0", "action": "cancel", "reason": "ok"},
                {"external_id": "nope", "action": "cancel", "reason": "x"},
            ],
            actor="api:test",
        )
    assert [(i["loc"], i["type"]) for i in caught.value.items] == [
        ([1, "external_id"], "event_not_found")
    ]
    assert value(count, ada) == 10 and not EventCorrection.objects.exists()


def test_an_event_is_corrected_once_and_its_replacement_again(organization, ada, ten):
    count = meter(organization, "sum", "v")
    (first,) = corrections.correct_events(
        organization=organization,
        corrections=[
            {"external_id": "r0", "action": "replace", "reason": "a", "metadata": {"v": 11}}
        ],
        actor="api:test",
    )
    with pytest.raises(InvalidCorrection) as caught:
        corrections.correct_events(
            organization=organization,
            corrections=[{"external_id": "r0", "action": "cancel", "reason": "again"}],
            actor="api:test",
        )
    assert caught.value.items[0]["type"] == "already_corrected"
    corrections.correct_events(
        organization=organization,
        corrections=[
            {
                "event_id": str(first.replacement_id),
                "action": "replace",
                "reason": "b",
                "metadata": {"v": 12},
            }
        ],
        actor="api:test",
    )
    assert value(count, ada) == 550 - 10 + 12


def test_nul_characters_are_refused_and_names_count_what_is_left(organization, ada, ten):
    with pytest.raises(InvalidCorrection) as caught:
        corrections.correct_events(
            organization=organization,
            corrections=[
                {"external_id": "r0", "action": "cancel", "reason": "a\x00b"},
                {"external_id": "r\x001", "action": "cancel", "reason": "x"},
                {"external_id": "r2", "action": "replace", "reason": "x", "name": "re\x00q"},
            ],
            actor="api:test",
        )
    assert [(i["loc"], i["type"]) for i in caught.value.items] == [
        ([0, "reason"], "string_nul"),
        ([1, "external_id"], "string_nul"),
        ([2, "name"], "string_nul"),
    ]
    corrections.correct_events(
        organization=organization,
        corrections=[
            {"external_id": "r0", "action": "cancel", "reason": "x"},
            {"external_id": "r1", "action": "replace", "reason": "x", "name": "req.fixed"},
        ],
        actor="api:test",
    )
    names = dict(EventName.objects.filter(source="user").values_list("name", "occurrences"))
    assert names == {"req": 8, "req.fixed": 1}
