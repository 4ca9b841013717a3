"""The two races of `metering.locks`, made deterministic: an ingest is held just before its
commit (another connection holds a row lock its last statement needs) while a customer signs up
or a meter is created; then it is released. Without the lock discipline the held ingest's events
stayed unlinked forever, or the new meter was marked ready without them."""

import threading
import time
from datetime import UTC, datetime

import pytest
from django.db import connection, connections

from customers.models import Customer
from customers.services import create_customer
from metering import aggregation, backfill, customer_meters, meters
from metering.ingest import ingest_events
from metering.models import Event, EventName, Meter

WORK = {"conjunction": "and", "clauses": [{"property": "name", "operator": "eq", "value": "work"}]}


def _run(target, *args, **kwargs) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def body():
        try:
            outcome["value"] = target(*args, **kwargs)
        except Exception as exc:  # reported by the test
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=body)
    thread.start()
    return thread, outcome


def _hold_row(sql: str, params) -> object:
    """Open a second connection that locks a row until `.close()`; returns that connection."""
    other = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cursor:
        cursor.execute(sql, params)
    return other


def _wait_until_blocked(seconds: float = 10) -> None:
    """Until some backend of this database waits on a lock (the held ingest)."""
    deadline = time.monotonic() + seconds
    with connections.create_connection("default").cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the ingest never blocked")


@pytest.mark.django_db(transaction=True)
def test_signup_while_an_ingest_of_its_external_id_is_in_flight_links_every_event(organization):
    ingest_events(organization=organization, events=[{"name": "work", "external_customer_id": "x"}])
    name_row = EventName.objects.get(organization=organization, name="work")
    # the ingest's last statement (event-name counts) waits on this row: it is held after its
    # INSERT, before its commit
    holder = _hold_row("SELECT 1 FROM metering_eventname WHERE id = %s FOR UPDATE", [name_row.pk])
    events = [{"name": "work", "external_customer_id": "late"} for _ in range(5)]
    ingest, ingest_outcome = _run(ingest_events, organization=organization, events=events)
    _wait_until_blocked()
    signup, signup_outcome = _run(
        create_customer, organization=organization, email="late@example.com", external_id="late"
    )
    time.sleep(0.3)  # the sign-up runs (or waits for the ingest) meanwhile
    holder.close()
    ingest.join(20)
    signup.join(20)
    assert "error" not in ingest_outcome and "error" not in signup_outcome
    customer = Customer.objects.get(organization=organization, external_id="late")
    assert Event.objects.filter(external_customer_id="late", customer__isnull=True).count() == 0
    assert Event.objects.filter(customer=customer).count() == 5


@pytest.mark.django_db(transaction=True)
def test_meter_created_while_the_first_ingest_is_in_flight_counts_its_batch(organization):
    customer = create_customer(organization=organization, email="a@example.com", external_id="a")
    holder = _hold_row("SELECT 1 FROM customers_customer WHERE id = %s FOR UPDATE", [customer.pk])
    # the ingest sets first_user_event_at last: it waits on the customer row after its rollups
    events = [{"name": "work", "external_customer_id": "a"} for _ in range(7)]
    ingest, ingest_outcome = _run(ingest_events, organization=organization, events=events)
    _wait_until_blocked()
    creation, creation_outcome = _run(
        meters.create_meter,
        organization=organization,
        name="work count",
        filter=WORK,
        aggregation={"func": "count"},
    )
    time.sleep(0.3)
    holder.close()
    ingest.join(20)
    creation.join(20)
    assert "error" not in ingest_outcome and "error" not in creation_outcome
    meter = Meter.objects.get(organization=organization, name="work count")
    backfill.backfill(meter.pk)  # what the queued task does, if the meter needs one
    meter.refresh_from_db()
    assert customer_meters.numbers_for(meter, customer).consumed_units == 7
    _, from_rollups = aggregation.compute(
        meter,
        buckets=[(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))],
        customer_ids=[customer.pk],
        use_rollups=True,
    )
    assert from_rollups.event_count == 7
