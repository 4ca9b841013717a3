"""Rate limits: per API token on the REST API (and the portal's sign-in counters), 429 + Retry-After,
counters in the shared store (the database by default, Redis when configured) incremented
atomically, fail-open when the store is down, and the SDK riding through 429s losing nothing."""

import logging
import threading
import uuid
from datetime import timedelta

import pytest
from django.core.cache import caches
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from meterline import Meterline, RetryPolicy
from rest_framework.test import APIClient

from core.models import RateCounter
from metering.models import Event
from tests.support import free_port

REDIS = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": "redis://127.0.0.1:6379/14",
}
REDIS_CACHE = {"default": REDIS, "ratelimit": REDIS}  # what CACHE_URL=redis://… sets


def client_for(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def exhaust(client: APIClient, allowed: int):
    for _ in range(allowed):
        assert client.get("/v1/customers/").status_code == 200
    return client.get("/v1/customers/")


def assert_is_429(response, window_seconds: int):
    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "TooManyRequests"
    assert "throttled" in body["detail"]
    assert 1 <= int(response["Retry-After"]) <= window_seconds


@pytest.mark.django_db
def test_each_token_has_its_own_allowance(settings, token_for):
    settings.API_RATE_LIMIT = "3/m"
    org, first = token_for("Limited")
    _, second = token_for("Limited")  # same organization, another token
    assert_is_429(exhaust(client_for(first), 3), 60)
    assert_is_429(client_for(first).post("/v1/customers/", {"email": "a@x.io"}), 60)
    assert exhaust(client_for(second), 2).status_code == 200
    assert org.customers.count() == 0  # the refused POST wrote nothing


@pytest.mark.django_db
def test_no_limit_when_unset(settings, token_for):
    settings.API_RATE_LIMIT = ""
    _, secret = token_for("Unlimited")
    assert exhaust(client_for(secret), 30).status_code == 200


@pytest.mark.django_db
def test_redis_store_when_configured(settings, token_for):
    settings.API_RATE_LIMIT = "2/m"
    with override_settings(CACHES=REDIS_CACHE):
        redis = caches["ratelimit"]._cache.get_client()
        before = set(redis.keys("*rl:*"))
        _, secret = token_for("Redis")
        assert_is_429(exhaust(client_for(secret), 2), 60)
        counters = set(redis.keys("*rl:*")) - before
        assert len(counters) == 1  # the token's counter, in Redis
        assert int(redis.get(counters.pop())) == 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM core_ratecounter")
        assert cursor.fetchone()[0] == 0  # and not in the database


@pytest.mark.django_db
def test_store_down_lets_requests_through_with_a_warning(settings, token_for, caplog):
    settings.API_RATE_LIMIT = "1/m"
    down = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "ratelimit": {**REDIS, "LOCATION": f"redis://127.0.0.1:{free_port()}/0"},
    }
    with override_settings(CACHES=down), caplog.at_level(logging.WARNING, "core.api.throttling"):
        _, secret = token_for("Store down")
        assert exhaust(client_for(secret), 3).status_code == 200
    assert "counter store unavailable" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_database_counter_increments_atomically_under_concurrency():
    cache = caches["ratelimit"]
    key = f"concurrency-{uuid.uuid4()}"
    assert cache.add(key, 0, 60)
    assert not cache.add(key, 5, 60)  # a live window is not replaced
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)

    def bump():
        barrier.wait()
        for _ in range(per_thread):
            cache.incr(key)
        connection.close()

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert cache.get(key) == threads * per_thread
    with pytest.raises(ValueError):
        cache.incr(f"missing-{uuid.uuid4()}")
    # an expired window is replaced by add, and no longer counts
    expired = f"expired-{uuid.uuid4()}"
    assert cache.add(expired, 7, 60)
    RateCounter.objects.filter(key__endswith=expired).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    assert cache.get(expired, "gone") == "gone"
    with pytest.raises(ValueError):
        cache.incr(expired)
    assert cache.add(expired, 1, 60)
    assert cache.incr(expired) == 2


@pytest.mark.django_db
def test_portal_sign_in_counts_in_the_shared_store(settings):
    from portal import ratelimit

    rate = ratelimit.Rate.parse("2/60")
    assert [ratelimit.hit("sign-in-test", "198.51.100.7", rate) for _ in range(2)] == [None, None]
    wait = ratelimit.hit("sign-in-test", "198.51.100.7", rate)
    assert 1 <= wait <= 60
    assert ratelimit.hit("sign-in-test", "198.51.100.8", rate) is None
    with connection.cursor() as cursor:  # rows of the shared table, not a per-process cache
        cursor.execute("SELECT count(*), sum(count) FROM core_ratecounter")
        assert cursor.fetchone() == (2, 4)


def test_sdk_rides_through_429s_from_the_real_server(settings, live_url, live_org_token, caplog):
    settings.API_RATE_LIMIT = "2/s"
    org, secret = live_org_token
    errors = []
    client = Meterline(
        secret,
        base_url=live_url,
        batch_size=10,
        flush_interval=0.01,
        retry=RetryPolicy(max_retries=50, backoff_base=0.05, backoff_max=0.2),
        on_error=errors.append,
    )
    with caplog.at_level(logging.INFO, "meterline"):
        ids = [
            client.ingest({"name": "limited", "external_customer_id": "u", "metadata": {"i": i}})
            for i in range(100)
        ]
        assert client.close(timeout=60)
    stats = client.stats
    assert "HTTP 429, retrying" in caplog.text  # the server refused, the SDK waited
    assert stats.retries > 0
    assert (stats.failed, stats.dropped, errors) == (0, 0, [])
    assert stats.sent + stats.duplicates == 100
    stored = Event.objects.filter(organization=org, name="limited")
    assert stored.count() == 100
    assert set(stored.values_list("external_id", flat=True)) == set(ids)
