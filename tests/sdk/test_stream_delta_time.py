"""Stream and Delta time strategies: exact byte and chunk counts; durations within a stated
tolerance (measured ≥ the slept time, and at most 0.25 s above it); events also emitted when
the wrapped code raises, with the original exception propagating unchanged."""

import asyncio
import io
import time

import pytest
from meterline import AsyncMeterline

from .conftest import FAST_RETRY, stored

pytestmark = pytest.mark.django_db(transaction=True)

TOLERANCE = 0.25  # seconds above the slept time allowed for scheduling overhead


def only(org, name):
    (event,) = stored(org, name=name)
    return event.metadata


class Boom(Exception):
    pass


# --- Stream ------------------------------------------------------------------------------
def test_sync_iterator_of_bytes_and_str(ml, live_org):
    def body():
        yield b"abc"
        time.sleep(0.2)
        yield b""
        yield bytearray(b"defgh")

    assert list(ml.stream(body(), customer="u", name="bytes")) == [b"abc", b"", b"defgh"]
    text = ["héllo", " wörld"]  # 6 and 7 bytes in UTF-8
    assert list(ml.stream(iter(text), customer="u", name="text")) == text
    assert ml.flush(timeout=10)
    m = only(live_org, "bytes")
    assert (m["bytes"], m["chunks"], m["strategy"]) == (8, 2, "stream")
    assert 0.2 <= m["duration_seconds"] <= 0.2 + TOLERANCE
    m = only(live_org, "text")
    assert (m["bytes"], m["chunks"]) == (13, 2)


def test_sync_iterator_failure_emits_and_propagates(ml, live_org):
    error = Boom("disk gone")

    def body():
        yield b"1234"
        yield b"56"
        raise error

    received = []
    with pytest.raises(Boom) as info:
        for chunk in ml.stream(body(), customer="u", name="broken"):
            received.append(chunk)
    assert info.value is error
    assert received == [b"1234", b"56"]
    assert ml.flush(timeout=10)
    m = only(live_org, "broken")
    assert (m["bytes"], m["chunks"], m["error"]) == (6, 2, "Boom")


def test_sync_iterator_closed_early_emits_once(ml, live_org):
    closed = []

    def body():
        try:
            for _ in range(10):
                yield b"x" * 10
        finally:
            closed.append(True)

    stream = ml.stream(body(), customer="u", name="partial")
    assert next(stream) == b"x" * 10
    assert next(stream) == b"x" * 10
    stream.close()
    stream.close()
    assert closed == [True]
    assert ml.flush(timeout=10)
    m = only(live_org, "partial")
    assert (m["bytes"], m["chunks"]) == (20, 2)


def test_async_iterator(ml, live_org):
    async def body():
        for size in (100, 200, 300):
            await asyncio.sleep(0.05)
            yield b"z" * size

    async def broken():
        yield "ab"
        raise Boom()

    async def main():
        got = [c async for c in ml.stream(body(), customer="u", name="async")]
        assert [len(c) for c in got] == [100, 200, 300]
        with pytest.raises(Boom):
            async for _ in ml.stream(broken(), customer="u", name="async.broken"):
                pass

    asyncio.run(main())
    assert ml.flush(timeout=10)
    m = only(live_org, "async")
    assert (m["bytes"], m["chunks"]) == (600, 3)
    assert 0.15 <= m["duration_seconds"] <= 0.15 + TOLERANCE
    m = only(live_org, "async.broken")
    assert (m["bytes"], m["chunks"], m["error"]) == (2, 1, "Boom")


def test_file_like_read_and_write(ml, live_org, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789" * 1000)  # 10,000 bytes
    with ml.stream(open(path, "rb"), customer="u", name="file.read") as f:
        assert f.read(4096) == b"0123456789" * 409 + b"012345"
        buffer = bytearray(1000)
        assert f.readinto(buffer) == 1000
        rest = f.read()
        assert len(rest) == 10_000 - 4096 - 1000
        assert f.read() == b""  # EOF: not a chunk
        assert f.tell() == 10_000  # other attributes are the file's own
    assert f.closed

    sink = io.StringIO()
    writer = ml.stream(sink, customer="u", name="file.write")
    assert writer.write("naïve ") == 6
    writer.writelines(["line\n", "€\n"])
    value = sink.getvalue()
    writer.close()
    assert value == "naïve line\n€\n"
    assert ml.flush(timeout=10)
    m = only(live_org, "file.read")
    assert (m["bytes"], m["chunks"], m["direction"]) == (10_000, 3, "read")
    m = only(live_org, "file.write")
    assert (m["bytes"], m["chunks"], m["direction"]) == (7 + 5 + 4, 3, "write")


def test_file_like_failure_emits_and_propagates(ml, live_org):
    class FailingReader(io.RawIOBase):
        def __init__(self):
            self.calls = 0

        def readable(self):
            return True

        def read(self, size=-1):
            self.calls += 1
            if self.calls == 3:
                raise OSError("connection reset")
            return b"q" * 50

    reader = ml.stream(FailingReader(), customer="u", name="file.fail")
    reader.read(50)
    reader.read(50)
    with pytest.raises(OSError, match="connection reset"):
        reader.read(50)
    assert ml.flush(timeout=10)
    m = only(live_org, "file.fail")
    assert (m["bytes"], m["chunks"], m["error"]) == (100, 2, "OSError")


# --- Delta time ----------------------------------------------------------------------------
def test_delta_time_context_manager_decorator_and_start_stop(ml, live_org):
    with ml.delta_time(customer="u", name="dt.with"):
        time.sleep(0.3)

    @ml.delta_time(customer="u", name="dt.deco")
    def work(x):
        time.sleep(0.1)
        return x * 2

    assert work(21) == 42
    assert work.__name__ == "work"
    assert work(1) == 2

    timer = ml.delta_time(customer="u", name="dt.startstop").start()
    time.sleep(0.2)
    duration = timer.stop()
    assert 0.2 <= duration <= 0.2 + TOLERANCE
    assert timer.stop() is None  # not started again: nothing emitted

    @ml.delta_time(customer="u", name="dt.async")
    async def job():
        await asyncio.sleep(0.15)
        return "done"

    async def main():
        assert await job() == "done"
        async with ml.delta_time(customer="u", name="dt.asyncwith"):
            await asyncio.sleep(0.1)

    asyncio.run(main())
    assert ml.flush(timeout=10)
    expected = {
        "dt.with": [0.3],
        "dt.deco": [0.1, 0.1],
        "dt.startstop": [0.2],
        "dt.async": [0.15],
        "dt.asyncwith": [0.1],
    }
    for name, sleeps in expected.items():
        events = stored(live_org, name=name)
        assert len(events) == len(sleeps), name
        for event, slept in zip(events, sleeps, strict=True):
            d = event.metadata["duration_seconds"]
            assert slept <= d <= slept + TOLERANCE, (name, d)
            assert event.metadata["strategy"] == "delta_time"
            assert "error" not in event.metadata
    assert stored(live_org, name="dt.startstop")[0].metadata["duration_seconds"] == pytest.approx(
        duration
    )


def test_delta_time_emits_on_exception_and_propagates_it_unchanged(ml, live_org):
    error = Boom("original")
    with pytest.raises(Boom) as info, ml.delta_time(customer="u", name="dt.fail"):
        time.sleep(0.1)
        raise error
    assert info.value is error

    @ml.delta_time(customer="u", name="dt.fail")
    def failing():
        raise KeyError("k")

    with pytest.raises(KeyError) as info2:
        failing()
    assert info2.value.args == ("k",)

    @ml.delta_time(customer="u", name="dt.fail")
    async def failing_async():
        await asyncio.sleep(0.05)
        raise error

    with pytest.raises(Boom) as info3:
        asyncio.run(failing_async())
    assert info3.value is error
    assert ml.flush(timeout=10)
    events = stored(live_org, name="dt.fail")
    assert [e.metadata["error"] for e in events] == ["Boom", "KeyError", "Boom"]
    assert 0.1 <= events[0].metadata["duration_seconds"] <= 0.1 + TOLERANCE
    assert 0.05 <= events[2].metadata["duration_seconds"] <= 0.05 + TOLERANCE


# --- AsyncMeterline with strategies ----------------------------------------------------------
def test_async_client_ingests_and_flushes(live_url, live_org_token, live_org, polar):
    errors = []
    customer = polar.customers.create(email="ada@example.com", external_id="ada")

    async def main():
        async with AsyncMeterline(
            live_org_token[1],
            base_url=live_url,
            flush_interval=0.05,
            retry=FAST_RETRY,
            on_error=errors.append,
        ) as aml:
            ids = [
                aml.ingest({"name": "async.manual", "external_customer_id": "u"})
                for _ in range(250)
            ]
            async with aml.delta_time(customer="u", name="async.dt"):
                await asyncio.sleep(0.05)
            aml.ingest({"name": "y" * 200, "external_customer_id": "u"})  # 422: reported
            assert await aml.flush(timeout=10)
            state = await aml.customer_state(external_id="ada")
            assert state["id"] == customer.id and "active_meters" in state
            return ids, aml.stats

    ids, stats = asyncio.run(main())
    assert (stats.sent, stats.failed, stats.retries) == (251, 1, 0)
    assert len(errors) == 1 and errors[0].status_code == 422
    assert {e.external_id for e in stored(live_org, name="async.manual")} == set(ids)
    assert len(stored(live_org, name="async.dt")) == 1
