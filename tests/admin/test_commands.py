"""seed_demo and generate_events at small scale: exact counts, idempotency, unique external ids."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings

from customers.models import APIToken, Customer, Organization
from metering.models import Event, EventName, Meter

pytestmark = pytest.mark.django_db


def _demo_state():
    org = Organization.objects.get(name="Meterline Demo")
    # user events only: the billing demo adds system events (meter credits of subscriptions)
    user_events = Event.objects.filter(organization=org, source="user")
    return {
        "events": user_events.count(),
        "distinct_external_ids": user_events.values("external_id").distinct().count(),
        "unlinked": user_events.filter(customer__isnull=True).count(),
        "customers": Customer.objects.filter(organization=org).count(),
        "customers_with_first_event": Customer.objects.filter(
            organization=org, first_user_event_at__isnull=False
        ).count(),
        "active_tokens": APIToken.objects.filter(organization=org, revoked=False).count(),
        "names": dict(
            EventName.objects.filter(organization=org, source="user").values_list(
                "name", "occurrences"
            )
        ),
        "users": get_user_model().objects.filter(username="demo").count(),
    }


@override_settings(DEBUG=True)  # the demo seed is for development only
def test_seed_demo_creates_what_it_says_and_is_idempotent(tmp_path):
    credentials = tmp_path / "demo.json"
    call_command("seed_demo", events=2000, credentials_file=str(credentials), no_progress=True)
    state = _demo_state()
    assert state["events"] == 2000
    assert state["distinct_external_ids"] == 2000
    assert state["unlinked"] == 0  # the 5 late customers' earlier events were linked
    assert state["customers"] == 25
    assert state["customers_with_first_event"] == 25
    assert state["active_tokens"] == 1
    assert state["users"] == 1
    assert set(state["names"]) == {"api.request", "llm.completion", "storage.upload"}
    assert sum(state["names"].values()) == 2000
    # realistic metadata, parents among the events
    llm = Event.objects.filter(name="llm.completion").first()
    assert {"model", "vendor", "input_tokens", "output_tokens", "total_tokens"} <= set(llm.metadata)
    assert llm.metadata["_llm"]["total_tokens"] == llm.metadata["total_tokens"]
    api = Event.objects.filter(name="api.request").first()
    assert {"route", "method", "status", "latency_ms"} <= set(api.metadata)
    upload = Event.objects.filter(name="storage.upload").first()
    assert {"bytes", "bucket", "content_type"} <= set(upload.metadata)
    assert Event.objects.filter(parent__isnull=False).exists()

    written = json.loads(credentials.read_text())
    assert set(written) == {"username", "password", "token", "organization"}
    user = get_user_model().objects.get(username=written["username"])
    assert user.is_staff and user.is_superuser and user.check_password(written["password"])
    token = APIToken.objects.get_from_key(written["token"])
    assert token.organization.name == written["organization"] == "Meterline Demo"
    meters = Meter.objects.filter(organization=token.organization)
    assert sorted(m.aggregation["func"] for m in meters) == sorted(
        ["count", "sum", "avg", "min", "max", "unique"]
    )

    call_command("seed_demo", events=2000, credentials_file=str(credentials), no_progress=True)
    assert _demo_state() == state
    assert json.loads(credentials.read_text())["token"] == written["token"]  # reused
    assert Meter.objects.filter(organization=token.organization).count() == 6

    # asking for more tops up without duplicating
    call_command("seed_demo", events=2500, credentials_file=str(credentials), no_progress=True)
    assert _demo_state()["events"] == 2500
    assert _demo_state()["distinct_external_ids"] == 2500


def test_generate_events_inserts_exactly_that_many(tmp_path):
    call_command(
        "generate_events", events=5000, customers=40, days=10, org="Gen", seed=3,
        no_progress=True, skip_rollups=True,
    )  # fmt: skip
    org = Organization.objects.get(name="Gen")
    events = Event.objects.filter(organization=org)
    assert events.count() == 5000
    assert events.values("external_id").distinct().count() == 5000
    assert not events.filter(external_id__isnull=True).exists()
    assert not events.filter(customer__isnull=True).exists()
    assert Customer.objects.filter(organization=org).count() == 40
    names = dict(EventName.objects.filter(organization=org).values_list("name", "occurrences"))
    assert sum(names.values()) == 5000
    for name, occurrences in names.items():
        assert events.filter(name=name).count() == occurrences
    from django.db.models import Min

    firsts = dict(
        events.values("customer_id")
        .annotate(first=Min("timestamp"))
        .values_list("customer_id", "first")
    )
    for customer in Customer.objects.filter(organization=org):
        assert customer.first_user_event_at == firsts.get(customer.pk)
    llm = events.filter(name="llm.completion").first()
    assert llm.metadata["_llm"]["model"] == llm.metadata["model"]

    # a second run adds the same number again, with fresh unique external ids
    call_command(
        "generate_events", events=5000, customers=40, days=10, org="Gen", seed=3,
        no_progress=True, skip_rollups=True,
    )  # fmt: skip
    assert events.count() == 10_000
    assert events.values("external_id").distinct().count() == 10_000
    assert Customer.objects.filter(organization=org).count() == 40
    assert (
        sum(EventName.objects.filter(organization=org).values_list("occurrences", flat=True))
        == 10_000
    )
