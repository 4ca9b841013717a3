"""Usage alerts: crossing a threshold fires `customer.meter_threshold` exactly once per customer
and period — also when the crossing batch arrives from two clients at once."""

import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from polar.v2026_10.webhooks import PolarWebhookUnknownTypeError, validate_event

from billing import catalog, subscriptions
from billing.catalog import PriceSpec
from customers.models import Customer
from metering.ingest import ingest_events
from tests.factories import event_count_meter
from tests.webhooks.conftest import deliver_pending
from webhooks import tasks
from webhooks.models import AlertFiring, AlertMetric, AlertRule, WebhookEndpoint, WebhookEvent

CUSTOMERS = ("ada", "bo")


@pytest.fixture
def enqueued(monkeypatch):
    """The alert evaluations an ingest enqueues on commit: (organization id, customer ids)."""
    calls = []
    monkeypatch.setattr(tasks.evaluate_alerts, "delay_on_commit", lambda *args: calls.append(args))
    return calls


def setup_billing(organization, receiver, *, metric=AlertMetric.UNITS, threshold=10):
    meter = event_count_meter(organization)
    product = catalog.create_product(
        organization=organization,
        name="Usage",
        prices=[PriceSpec(amount_type="metered_unit", meter_id=meter.pk, unit_amount=Decimal(25))],
    )
    started = timezone.now() - timedelta(days=1)
    for external_id in CUSTOMERS:
        customer = Customer.objects.create(
            organization=organization, email=f"{external_id}@example.com", external_id=external_id
        )
        subscriptions.create_subscription(customer=customer, product=product, started_at=started)
    endpoint = WebhookEndpoint.objects.create(
        organization=organization, url=receiver.url, events=["customer.meter_threshold"]
    )
    AlertRule.objects.create(
        organization=organization, name="10 calls", meter=meter, metric=metric, threshold=threshold
    )
    return endpoint


def send(organization, units, tag):
    now = timezone.now()
    return ingest_events(
        organization=organization,
        events=[
            {
                "name": "api.call",
                "external_customer_id": external_id,
                "timestamp": (now - timedelta(seconds=i + 1)).isoformat(),
                "external_id": f"{tag}-{external_id}-{i}",
            }
            for external_id in CUSTOMERS
            for i in range(units)
        ],
    )


def evaluate(enqueued) -> int:
    fired = sum(tasks.evaluate_alerts.run(*args) for args in enqueued)
    enqueued.clear()
    return fired


@pytest.mark.django_db
def test_crossing_fires_once_per_customer_and_period(
    organization, receiver, allow_private, enqueued
):
    endpoint = setup_billing(organization, receiver)
    send(organization, 6, "a")
    assert evaluate(enqueued) == 0
    send(organization, 4, "b")  # 10 calls: reached
    assert evaluate(enqueued) == 2
    send(organization, 5, "c")  # still above: nothing more this period
    assert evaluate(enqueued) == 0
    assert AlertFiring.objects.count() == 2
    assert sorted(AlertFiring.objects.values_list("value", flat=True)) == [10, 10]

    deliver_pending()
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        # the signature verifies; the type is Meterline's extension, unknown to Polar's client
        with pytest.raises(PolarWebhookUnknownTypeError):
            validate_event(body, headers, endpoint.secret)
    payloads = sorted(
        (json.loads(body)["data"] for _, body in receiver.requests),
        key=lambda d: d["external_customer_id"],
    )
    assert [(d["external_customer_id"], d["value"], d["threshold"]) for d in payloads] == [
        ("ada", "10", "10"),
        ("bo", "10", "10"),
    ]


@pytest.mark.django_db
def test_amount_rule_uses_the_period_amount_in_cents(
    organization, receiver, allow_private, enqueued
):
    setup_billing(organization, receiver, metric=AlertMetric.AMOUNT, threshold=100)
    send(organization, 3, "a")  # 75 cents
    assert evaluate(enqueued) == 0
    send(organization, 1, "b")  # 100 cents
    assert evaluate(enqueued) == 2
    assert sorted(AlertFiring.objects.values_list("value", flat=True)) == [100, 100]


@pytest.mark.django_db
def test_organization_without_rules_enqueues_nothing(organization, enqueued):
    send(organization, 3, "a")
    assert enqueued == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_crossing_batches_fire_once(
    live_org_token, receiver, allow_private, monkeypatch
):
    organization = live_org_token[0]
    setup_billing(organization, receiver)
    by_thread: dict[int, list] = {}
    monkeypatch.setattr(
        tasks.evaluate_alerts,
        "delay_on_commit",
        lambda *args: by_thread.setdefault(threading.get_ident(), []).append(args),
    )
    send(organization, 8, "base")
    by_thread.clear()
    ingested, evaluating = threading.Barrier(2), threading.Barrier(2)
    results, errors = [], []

    def client(tag):
        try:
            ingested.wait()
            send(organization, 2, tag)  # each batch alone crosses 10
            evaluating.wait()
            results.append(
                sum(tasks.evaluate_alerts.run(*a) for a in by_thread[threading.get_ident()])
            )
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(tag,)) for tag in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) in ([0, 2], [1, 1])
    assert AlertFiring.objects.count() == 2
    assert WebhookEvent.objects.filter(type="customer.meter_threshold").count() == 2
    deliver_pending()
    assert len(receiver.requests) == 2
