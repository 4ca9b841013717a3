"""Meterline as a separate process, SIGKILLed while the SDK is sending and restarted on the same
port: nothing is lost and nothing is stored twice (exact counts in the database)."""

import threading
import time

import pytest
from meterline import Meterline, RetryPolicy

from tests.support import AppServer

TOTAL = 3000


@pytest.fixture
def server_process(transactional_db):
    server = AppServer(kind="runserver")
    server.start()
    yield server
    server.kill()


def test_server_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(
    server_process, token_for
):
    from metering.models import Event

    org, secret = token_for("Restart Org")
    errors = []
    client = Meterline(
        secret,
        base_url=server_process.url,
        batch_size=100,
        flush_interval=0.01,
        retry=RetryPolicy(max_retries=200, backoff_base=0.05, backoff_max=0.3),
        on_error=errors.append,
    )
    ids = []

    def produce() -> None:
        for i in range(TOTAL):
            ids.append(
                client.ingest(
                    {"name": "restart", "external_customer_id": "u", "metadata": {"i": i}}
                )
            )
            if i % 10 == 0:
                time.sleep(0.01)  # ~3 s of steady traffic

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.8)
    sent_before_kill = client.stats.sent
    server_process.kill()
    killed_at = len(ids)
    time.sleep(1.0)  # events keep arriving while nothing listens
    server_process.start()
    producer.join()
    assert client.close(timeout=60)

    assert 0 < sent_before_kill < TOTAL and 0 < killed_at < TOTAL
    stats = client.stats
    assert stats.retries > 0  # the kill did hit traffic
    assert (stats.failed, stats.dropped) == (0, 0)
    assert stats.sent + stats.duplicates == TOTAL
    assert errors == []
    rows = Event.objects.filter(organization=org, name="restart")
    assert rows.count() == TOTAL
    assert set(rows.values_list("external_id", flat=True)) == set(ids)
    assert sorted(rows.values_list("metadata__i", flat=True)) == list(range(TOTAL))
