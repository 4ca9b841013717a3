"""Usage corrections, what the service adds to the stores' part (tests/eventstore/test_corrections.py
runs the corrections themselves on both stores; the billing side is
tests/billing/test_usage_corrections.py): the audit log, NUL characters, event-name counts."""

import pytest
from auditlog.models import LogEntry

from customers.models import Customer
from metering import corrections
from metering.errors import InvalidCorrection
from metering.models import EventCorrection, EventName
from tests.factories import send_ten_requests

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(organization):
    return Customer.objects.create(organization=organization, external_id="ada")


@pytest.fixture
def ten(organization, ada):
    send_ten_requests(organization)


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
