"""The client and its background ingestion, against the live Meterline server and small real
HTTP servers (for 429/Retry-After, 5xx, a blocked server and the customer-meters contract)."""

import datetime as dt
import threading
import uuid

import pytest
from meterline import Meterline, RetryPolicy
from meterline.client import MeterlineAPIError

from ._servers import HTTPServerThread, send_json
from .conftest import FAST_RETRY, stored

pytestmark = pytest.mark.django_db(transaction=True)


def test_manual_event_gets_external_id_timestamp_and_strategy(ml, live_org, errors):
    before = dt.datetime.now(dt.UTC)
    event = {"name": "api.call", "external_customer_id": "u1", "metadata": {"route": "/v1/x"}}
    generated = ml.ingest(event)
    own = ml.ingest({**event, "external_id": "mine-1", "metadata": {"strategy": "custom"}})
    assert ml.flush(timeout=10)
    assert event == {
        "name": "api.call",
        "external_customer_id": "u1",
        "metadata": {"route": "/v1/x"},
    }
    assert own == "mine-1"
    assert len(generated) == 32 and uuid.UUID(hex=generated).version == 4
    rows = {e.external_id: e for e in stored(live_org)}
    assert set(rows) == {generated, "mine-1"}
    assert rows[generated].metadata == {"route": "/v1/x", "strategy": "manual"}
    assert rows["mine-1"].metadata == {"strategy": "custom"}
    assert before <= rows[generated].timestamp <= dt.datetime.now(dt.UTC)
    assert ml.stats.sent == 2 and ml.stats.failed == 0 and ml.stats.dropped == 0
    assert errors == []
    # the same external_id again is stored once and counted as a duplicate
    ml.ingest({**event, "external_id": "mine-1"})
    assert ml.flush(timeout=10)
    assert (ml.stats.sent, ml.stats.duplicates) == (2, 1)
    assert len(stored(live_org)) == 2


def test_10000_events_from_4_threads_arrive_exactly_once(live_url, live_org_token, live_org):
    client = Meterline(
        live_org_token[1], base_url=live_url, batch_size=1000, flush_interval=0.05, retry=FAST_RETRY
    )
    ids: list[list[str]] = [[] for _ in range(4)]

    def produce(n: int) -> None:
        for i in range(2500):
            ids[n].append(
                client.ingest(
                    {
                        "name": "bulk",
                        "external_customer_id": f"c{n}",
                        "metadata": {"thread": n, "i": i},
                    }
                )
            )

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.close(timeout=60)
    all_ids = [i for chunk in ids for i in chunk]
    assert len(set(all_ids)) == 10_000 and None not in all_ids
    stats = client.stats
    assert (stats.sent, stats.duplicates, stats.failed, stats.dropped) == (10_000, 0, 0, 0)
    from metering.models import Event

    rows = Event.objects.filter(organization=live_org, name="bulk")
    assert rows.count() == 10_000
    assert set(rows.values_list("external_id", flat=True)) == set(all_ids)
    for n in range(4):
        assert rows.filter(external_customer_id=f"c{n}").count() == 2500


def test_422_is_not_retried_and_is_reported(ml, live_org, errors):
    good = ml.ingest({"name": "ok", "external_customer_id": "u1"})
    bad = ml.ingest({"name": "x" * 129, "external_customer_id": "u1"})
    good2 = ml.ingest({"name": "ok", "external_customer_id": "u2"})
    assert ml.flush(timeout=10)
    stats = ml.stats
    assert (stats.sent, stats.failed, stats.retries) == (2, 1, 0)
    assert len(errors) == 1
    error = errors[0]
    assert error.status_code == 422
    assert [e["external_id"] for e in error.events] == [bad]
    assert error.detail[0]["loc"][:2] == ["body", "events"]
    assert error.detail[0]["loc"][3] == "name"
    assert {e.external_id for e in stored(live_org)} == {good, good2}


def test_422_reported_through_logger(ml, caplog):
    with caplog.at_level("WARNING", logger="meterline"):
        ml.ingest({"name": "bad", "external_customer_id": "u", "metadata": {"a": [1]}})
        assert ml.flush(timeout=10)
    assert "rejected by the server" in caplog.text
    assert ml.stats.failed == 1


def test_429_retry_after_is_honoured():
    def handler(request, raw):
        if len(server.requests) == 1:
            send_json(raw, 429, {"detail": "slow down"}, {"Retry-After": "1"})
        else:
            send_json(raw, 200, {"inserted": len(request.json()["events"]), "duplicates": 0})

    with HTTPServerThread(handler) as server:
        client = Meterline("t", base_url=server.url, flush_interval=0.01, retry=FAST_RETRY)
        client.ingest({"name": "a", "external_customer_id": "u"})
        client.ingest({"name": "b", "external_customer_id": "u"})
        assert client.flush(timeout=10)
        client.close()
    first, second = server.requests
    waited = second.at - first.at
    assert waited >= 1.0, waited
    assert waited < 1.5, waited  # the Retry-After, not a long backoff
    assert first.body == second.body  # same events, same external_ids
    assert first.headers["Authorization"] == "Bearer t"
    stats = client.stats
    assert (stats.sent, stats.retries, stats.failed) == (2, 1, 0)


def test_5xx_and_network_errors_are_retried_with_backoff():
    def handler(request, raw):
        n = len(server.requests)
        if n == 1:
            send_json(raw, 503, {"detail": "down"})
        elif n == 2:
            raw.close_connection = True
            raw.connection.shutdown(2)  # connection dropped without an answer
        else:
            send_json(raw, 200, {"inserted": 0, "duplicates": 1})

    with HTTPServerThread(handler) as server:
        client = Meterline("t", base_url=server.url, flush_interval=0.01, retry=FAST_RETRY)
        client.ingest({"name": "a", "external_customer_id": "u"})
        assert client.close(timeout=10)
    assert len(server.requests) == 3
    assert len({r.body for r in server.requests}) == 1
    stats = client.stats
    assert (stats.sent, stats.duplicates, stats.retries, stats.failed) == (0, 1, 2, 0)


def test_retries_exhausted_count_as_failed_and_are_reported():
    reported = []

    def handler(request, raw):
        send_json(raw, 500, {"detail": "broken"})

    with HTTPServerThread(handler) as server:
        client = Meterline(
            "t",
            base_url=server.url,
            flush_interval=0.01,
            retry=RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02),
            on_error=reported.append,
        )
        client.ingest({"name": "a", "external_customer_id": "u"})
        assert client.close(timeout=10)
    assert len(server.requests) == 3
    assert client.stats.failed == 1 and client.stats.retries == 2
    assert len(reported) == 1 and reported[0].status_code == 500 and reported[0].retryable


def test_full_queue_drops_the_newest_and_counts_them():
    release = threading.Event()
    received = threading.Event()

    def handler(request, raw):
        received.set()
        release.wait(10)
        send_json(raw, 200, {"inserted": len(request.json()["events"]), "duplicates": 0})

    with HTTPServerThread(handler) as server:
        client = Meterline("t", base_url=server.url, flush_interval=0.01, max_queue_size=3)
        assert client.ingest({"name": "first", "external_customer_id": "u"})
        assert received.wait(5)  # the worker is now blocked inside the first POST
        results = [client.ingest({"name": f"e{i}", "external_customer_id": "u"}) for i in range(5)]
        assert [r is not None for r in results] == [True, True, True, False, False]
        assert client.stats.dropped == 2
        release.set()
        assert client.close(timeout=10)
    sent_names = [e["name"] for r in server.requests for e in r.json()["events"]]
    assert sent_names == ["first", "e0", "e1", "e2"]
    assert client.stats.sent == 4
    assert client.ingest({"name": "late", "external_customer_id": "u"}) is None
    assert client.stats.dropped == 3


def test_unserializable_event_fails_alone(ml, live_org, errors):
    ok = ml.ingest({"name": "ok", "external_customer_id": "u", "metadata": {"x": 1.5}})
    ml.ingest({"name": "nan", "external_customer_id": "u", "metadata": {"x": float("nan")}})
    ml.ingest({"name": "obj", "external_customer_id": "u", "metadata": {"x": object()}})
    assert ml.flush(timeout=10)
    assert [e.external_id for e in stored(live_org)] == [ok]
    assert ml.stats.failed == 2 and ml.stats.sent == 1
    assert len(errors) == 1 and len(errors[0].events) == 2


def test_customer_state(ml, polar):
    customer = polar.customers.create(email="ada@example.com", external_id="ada")
    by_external = ml.customer_state(external_id="ada")
    assert by_external["id"] == customer.id
    assert by_external["external_id"] == "ada"
    assert "active_meters" in by_external
    assert ml.customer_state(customer_id=customer.id)["id"] == customer.id
    with pytest.raises(MeterlineAPIError) as info:
        ml.customer_state(external_id="nobody")
    assert info.value.status_code == 404


def test_customer_meters_request_contract():
    page = {"items": [{"id": "m1"}], "pagination": {"total_count": 1, "max_page": 1}}

    def handler(request, raw):
        send_json(raw, 200, page)

    with HTTPServerThread(handler) as server:
        client = Meterline("tok", base_url=server.url)
        result = client.customer_meters(
            external_customer_id="ada", meter_id=["m1", "m2"], page=2, limit=50
        )
        client.close()
    assert result == page
    (request,) = server.requests
    assert request.method == "GET"
    assert request.path == (
        "/v1/customer-meters/?external_customer_id=ada&meter_id=m1&meter_id=m2&page=2&limit=50"
    )
    assert request.headers["Authorization"] == "Bearer tok"


def test_ingest_never_raises_into_the_caller():
    client = Meterline("t", base_url="http://127.0.0.1:9")  # nothing listens on port 9
    assert client.ingest({"name": "x", "metadata": "not a mapping"}) is None
    assert client.ingest(None) is None  # type: ignore[arg-type]
    assert client.stats.failed == 2
    # unreachable server: the caller is not blocked, the event fails once close gives up
    assert client.ingest({"name": "x", "external_customer_id": "u"}) is not None
    assert client.close(timeout=0.3) is False
    assert client.stats.failed == 3
