"""Usage corrections, what the service adds to the stores' part (tests/eventstore/test_corrections.py
runs the corrections themselves on both stores; the billing side is
tests/billing/test_usage_corrections.py): the audit log, NUL characters, event-name counts."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from auditlog.models import LogEntry

from customers.models import Customer
from metering import corrections, meters, queries
from metering.errors import InvalidCorrection
from metering.ingest import ingest_events
from metering.models import EventCorrection, EventName

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


def test_every_correction_is_in_the_audit_log_whoever_makes_it(organization, ada, ten):
    made = corrections.correct_events(
        organization=organization,
        corrections=[
            {
                "external_id": "r9",
                "action": "replace",
                "reason": "peak mis-measured",
                "metadata": {"v": 5},
            },
            {"external_id": "r0", "action": "cancel", "reason": "test traffic"},
        ],
        actor="api:nightly import",
    )
    entries = LogEntry.objects.filter(object_pk__in=[str(c.pk) for c in made])
    assert sorted((e.additional_data["action"], e.additional_data["caller"]) for e in entries) == [
        ("event canceled: test traffic", "api:nightly import"),
        ("event replaced: peak mis-measured", "api:nightly import"),
    ]
    assert {c.actor for c in EventCorrection.objects.all()} == {"api:nightly import"}


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
