"""Low-balance alerts: a `balance` rule fires `customer.meter_threshold` when a meter's credits
left fall below its threshold — once per crossing: not again while the balance stays low, again
after new credits lifted it and it fell below once more."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import catalog, credits, subscriptions
from billing.catalog import PriceSpec
from customers.services import create_customer
from metering.ingest import ingest_events
from tests.factories import event_count_meter
from tests.webhooks.conftest import deliver_pending
from webhooks import tasks
from webhooks.models import AlertFiring, AlertMetric, AlertRule, WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch):
    calls = []
    monkeypatch.setattr(tasks.evaluate_alerts, "delay_on_commit", lambda *args: calls.append(args))
    return calls


def evaluate(enqueued) -> int:
    fired = sum(tasks.evaluate_alerts.run(*args) for args in enqueued)
    enqueued.clear()
    return fired


def send(organization, units, tag):
    now = timezone.now()
    ingest_events(
        organization=organization,
        events=[
            {
                "name": "api.call",
                "external_customer_id": "ada",
                "timestamp": (now - timedelta(seconds=i + 1)).isoformat(),
                "external_id": f"{tag}-{i}",
            }
            for i in range(units)
        ],
    )


def test_low_balance_fires_once_per_crossing(organization, receiver, allow_private, enqueued):
    meter = event_count_meter(organization)
    product = catalog.create_product(
        organization=organization,
        name="Pay as you go",
        prices=[PriceSpec(amount_type="metered_unit", meter_id=meter.pk, unit_amount=Decimal(1))],
    )
    ada = create_customer(organization=organization, email="ada@example.com", external_id="ada")
    subscription = subscriptions.create_subscription(
        customer=ada, product=product, started_at=timezone.now() - timedelta(days=1)
    )
    WebhookEndpoint.objects.create(
        organization=organization, url=receiver.url, events=["customer.meter_threshold"]
    )
    rule = AlertRule.objects.create(
        organization=organization,
        name="Under 200 calls left",
        meter=meter,
        metric=AlertMetric.BALANCE,
        threshold=200,
    )
    credits.grant(customer=ada, meter=meter, units=1000, reason="Pack")

    send(organization, 700, "a")  # 300 left
    assert evaluate(enqueued) == 0
    send(organization, 150, "b")  # 150 left: below 200
    assert evaluate(enqueued) == 1
    send(organization, 50, "c")  # 100 left: still below, no second alert
    assert evaluate(enqueued) == 0

    credits.grant(customer=ada, meter=meter, units=500, reason="Top-up")  # 600 left
    send(organization, 100, "d")  # 500 left: above again
    assert evaluate(enqueued) == 0
    send(organization, 350, "e")  # 150 left: the second crossing
    assert evaluate(enqueued) == 1
    send(organization, 1, "f")
    assert evaluate(enqueued) == 0

    firings = list(AlertFiring.objects.order_by("fired_at").values_list("value", "crossing"))
    assert firings == [(Decimal(150), 1000), (Decimal(150), 1500)]
    deliver_pending()
    payloads = [json.loads(body)["data"] for _, body in receiver.requests]
    assert [(p["metric"], p["threshold"], p["value"]) for p in payloads] == [
        ("balance", "200", "150"),
        ("balance", "200", "150"),
    ]
    assert {p["rule_id"] for p in payloads} == {str(rule.pk)}
    assert {p["subscription_id"] for p in payloads} == {str(subscription.pk)}
