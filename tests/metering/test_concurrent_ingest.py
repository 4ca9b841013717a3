"""Concurrent ingests for the same customers and meters: no deadlock surfaces as an error, and
rollups equal a recomputation from raw events (reliability.md, "Concurrency")."""

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from rest_framework.test import APIClient

from customers.services import create_customer
from metering import aggregation, meters
from metering.models import Event, Meter

METERS = [
    ("count", {"func": "count"}),
    ("sum", {"func": "sum", "property": "tokens"}),
    ("avg", {"func": "avg", "property": "tokens"}),
    ("min", {"func": "min", "property": "tokens"}),
    ("max", {"func": "max", "property": "tokens"}),
    ("unique", {"func": "unique", "property": "model"}),
]


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_sharing_customers_all_succeed_and_rollups_equal_raw(token_for):
    organization, secret = token_for("Contention")
    customers = [
        create_customer(organization=organization, email=f"c{i}@example.com", external_id=f"c{i}")
        for i in range(12)
    ]
    for label, aggregation_spec in METERS:
        meters.create_meter(
            organization=organization,
            name=f"meter {label}",
            filter={
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": "work"}],
            },
            aggregation=aggregation_spec,
        )
    base = datetime(2026, 11, 1, tzinfo=UTC)
    threads_count, batches_per_thread, batch_size = 6, 4, 150
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads_count)

    def worker(seed: int):
        rng = random.Random(seed)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        barrier.wait()
        for batch in range(batches_per_thread):
            order = customers[:]
            rng.shuffle(order)  # each batch touches the customers in a different order
            events = [
                {
                    "name": "work",
                    "external_customer_id": order[i % len(order)].external_id,
                    "external_id": f"t{seed}-b{batch}-{i}",
                    # earlier and earlier timestamps: every batch updates first_user_event_at
                    "timestamp": (base - timedelta(hours=seed * 10 + batch, minutes=i)).isoformat(),
                    "metadata": {
                        "tokens": rng.randint(-5, 500),
                        "model": rng.choice(["a", "b", "c", "d"]),
                    },
                }
                for i in range(batch_size)
            ]
            response = client.post("/v1/events/ingest", {"events": events}, format="json")
            with lock:
                statuses.append(response.status_code)
        connection.close()

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * (threads_count * batches_per_thread)
    assert (
        Event.objects.filter(organization=organization).count()
        == threads_count * batches_per_thread * batch_size
    )
    window = [(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))]
    for meter in Meter.objects.filter(organization=organization):
        for customer in customers:
            _, from_rollups = aggregation.compute(
                meter, buckets=window, customer_ids=[customer.pk], use_rollups=True
            )
            _, from_raw = aggregation.compute(
                meter, buckets=window, customer_ids=[customer.pk], use_rollups=False
            )
            func = meter.aggregation["func"]
            assert aggregation.final_value(func, from_rollups) == aggregation.final_value(
                func, from_raw
            ), (meter.name, customer.external_id)
    for customer in customers:
        customer.refresh_from_db()
        earliest = (
            Event.objects.filter(customer=customer)
            .order_by("timestamp")
            .values_list("timestamp", flat=True)[0]
        )
        assert customer.first_user_event_at == earliest
