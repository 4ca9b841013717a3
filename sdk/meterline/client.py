"""``Meterline`` (threads) and ``AsyncMeterline`` (asyncio): ingestion and reads."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from meterline import _transport
from meterline._events import Event, prepare_event
from meterline._transport import Counters, Delivery, IngestError, IngestStats, RetryPolicy
from meterline._worker import AsyncWorker, ThreadWorker
from meterline.strategies import Strategies

logger = logging.getLogger("meterline")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
__all__ = ["AsyncMeterline", "Meterline", "MeterlineAPIError"]


class MeterlineAPIError(Exception):
    """A read (``customer_state``, ``customer_meters``) answered with an HTTP error."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _params(**values: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list | tuple | set):
            out.extend((key, str(v)) for v in value)
        else:
            out.append((key, str(value)))
    return out


def _state_path(customer_id: str | None, external_id: str | None) -> str:
    if (customer_id is None) == (external_id is None):
        raise ValueError("give exactly one of customer_id= or external_id=")
    if customer_id is not None:
        return f"/v1/customers/{quote(str(customer_id), safe='')}/state"
    return f"/v1/customers/external/{quote(str(external_id), safe='')}/state"


def _decode(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json()
        except ValueError:
            detail = response.text[:2000]
        raise MeterlineAPIError(response.status_code, detail)
    return response.json()


class _Base(Strategies):
    def __init__(
        self,
        token: str | None,
        *,
        base_url: str | None,
        batch_size: int,
        flush_interval: float,
        max_queue_size: int,
        timeout: float,
        retry: RetryPolicy | None,
        on_error: Callable[[IngestError], None] | None,
        close_timeout: float,
    ) -> None:
        token = token or os.environ.get("METERLINE_TOKEN")
        if not token:
            raise ValueError("a Meterline API token is required (or set METERLINE_TOKEN)")
        if batch_size < 1 or max_queue_size < 1:
            raise ValueError("batch_size and max_queue_size must be positive")
        self.base_url = (base_url or os.environ.get("METERLINE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self._headers = {
            "Authorization": f"Bearer {token}",
            "User-Agent": "meterline-sdk-python/0.1",
        }
        self._timeout = timeout
        self.retry = retry or RetryPolicy()
        self.on_error = on_error
        self.close_timeout = close_timeout
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue_size = max_queue_size
        self._counters = Counters()
        self._closed = False

    @property
    def stats(self) -> IngestStats:
        """A snapshot of the delivery counters."""
        return self._counters.snapshot()

    def _report(self, error: IngestError) -> None:
        logger.warning(
            "meterline: %s (%d events, status %s): %s",
            error.message,
            len(error.events),
            error.status_code,
            error.detail,
        )
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                logger.exception("meterline: on_error callback raised")

    def _prepare(self, event: Mapping[str, Any], strategy: str) -> Event | None:
        try:
            return prepare_event(event, strategy)
        except Exception as exc:  # never raise into the caller
            self._counters.add(failed=1)
            self._report(IngestError(f"could not prepare event: {exc!r}", [event]))  # type: ignore[list-item]
            return None

    def _dropped(self, n: int = 1) -> None:
        self._counters.add(dropped=n)
        logger.warning("meterline: event dropped (queue full or client closed)")

    def _fail_unsent(self, events: list[Event]) -> None:
        if events:
            self._counters.add(failed=len(events))
            self._report(IngestError("client closed before delivery", events, retryable=True))

    def _delivery(self, aborted: Callable[[], bool]) -> Delivery:
        return Delivery(self.retry, self._counters, self._report, aborted)

    def _register_atexit(self) -> None:
        ref = weakref.ref(self)

        def at_exit() -> None:
            client = ref()
            if client is not None:
                client._close_at_exit()

        self._atexit = at_exit
        atexit.register(at_exit)

    def _unregister_atexit(self) -> None:
        atexit.unregister(self._atexit)

    def _close_at_exit(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Meterline(_Base):
    """Thread-based client. ``ingest`` never blocks and never raises: events are queued
    (bounded) and a daemon thread sends them in batches. Use ``flush()`` / ``close()`` (also
    run at interpreter exit) to wait for delivery."""

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queue_size: int = 100_000,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: Callable[[IngestError], None] | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            token,
            base_url=base_url,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            timeout=timeout,
            retry=retry,
            on_error=on_error,
            close_timeout=close_timeout,
        )
        self._ingest_http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout
        )
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout)
        self._worker = ThreadWorker(
            self._send_batch,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
        )
        self._close_lock = threading.Lock()
        self._register_atexit()

    # --- ingestion ---------------------------------------------------------------------------
    def ingest(self, event: Mapping[str, Any], *, strategy: str = "manual") -> str | None:
        """Queue one event; returns its ``external_id``, or None when it was not queued."""
        prepared = self._prepare(event, strategy)
        if prepared is None:
            return None
        if self._closed or not self._worker.put(prepared):
            self._dropped()
            return None
        return prepared["external_id"]

    def ingest_many(self, events: Iterable[Mapping[str, Any]]) -> list[str | None]:
        return [self.ingest(event) for event in events]

    def _send_batch(self, batch: list[Event]) -> None:
        gen = _transport.deliver(batch, self._delivery(self._worker.abort.is_set))
        _transport.run_sync(gen, self._ingest_http, self._sleep)

    def _sleep(self, seconds: float) -> None:
        self._worker.abort.wait(seconds)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every queued event is delivered (or given up). False on timeout."""
        return self._worker.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is queued (waiting at most ``timeout``, default ``close_timeout``),
        stop the worker and release connections. Idempotent. Later events are dropped."""
        with self._close_lock:
            if self._closed:
                return True
            self._closed = True
        timeout = self.close_timeout if timeout is None else timeout
        delivered = self._worker.close(timeout)
        self._fail_unsent(self._worker.drain())
        self._ingest_http.close()
        self._http.close()
        self._unregister_atexit()
        return delivered

    def _close_at_exit(self) -> None:
        self.close()

    def __enter__(self) -> Meterline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads -------------------------------------------------------------------------------
    def customer_state(
        self, *, customer_id: str | None = None, external_id: str | None = None
    ) -> dict[str, Any]:
        """Polar's CustomerState (``active_meters`` with balances) for one customer."""
        return _decode(self._http.get(_state_path(customer_id, external_id)))

    def customer_meters(
        self,
        *,
        customer_id: str | list[str] | None = None,
        external_customer_id: str | list[str] | None = None,
        meter_id: str | list[str] | None = None,
        page: int = 1,
        limit: int = 10,
    ) -> dict[str, Any]:
        """One page of Polar's ListResourceCustomerMeter: ``{"items": [...], "pagination":
        {"total_count", "max_page"}}``."""
        params = _params(
            customer_id=customer_id,
            external_customer_id=external_customer_id,
            meter_id=meter_id,
            page=page,
            limit=limit,
        )
        return _decode(self._http.get("/v1/customer-meters/", params=params))


class AsyncMeterline(_Base):
    """asyncio client. ``ingest`` is a plain (non-blocking) method usable from coroutines and
    from other threads; ``flush``, ``close`` and the reads are coroutines. The sending task
    starts with the first event in the running loop. At interpreter exit, events still queued
    are sent synchronously if ``close()`` was not awaited."""

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queue_size: int = 100_000,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: Callable[[IngestError], None] | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            token,
            base_url=base_url,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            timeout=timeout,
            retry=retry,
            on_error=on_error,
            close_timeout=close_timeout,
        )
        self._ingest_http: httpx.AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._worker = AsyncWorker(
            self._send_batch,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            on_drop=self._dropped,
        )
        self._register_atexit()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self._timeout
        )

    def ingest(self, event: Mapping[str, Any], *, strategy: str = "manual") -> str | None:
        """Queue one event without blocking; returns its ``external_id`` or None."""
        prepared = self._prepare(event, strategy)
        if prepared is None:
            return None
        if self._closed or not self._worker.put(prepared):
            self._dropped()
            return None
        return prepared["external_id"]

    async def _send_batch(self, batch: list[Event]) -> None:
        if self._ingest_http is None:
            self._ingest_http = self._client()
        gen = _transport.deliver(batch, self._delivery(lambda: self._worker.abort))
        await _transport.run_async(gen, self._ingest_http, self._sleep)

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._worker.abort and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    async def flush(self, timeout: float | None = 10.0) -> bool:
        return await self._worker.flush(timeout)

    async def close(self, timeout: float | None = None) -> bool:
        if self._closed:
            return True
        self._closed = True
        timeout = self.close_timeout if timeout is None else timeout
        delivered = await self._worker.close(timeout)
        self._fail_unsent(self._worker.drain())
        for client in (self._ingest_http, self._http):
            if client is not None:
                await client.aclose()
        self._unregister_atexit()
        return delivered

    def _close_at_exit(self) -> None:
        if self._closed:
            return
        self._closed = True
        leftover = self._worker.drain()
        if not leftover:
            return
        with httpx.Client(base_url=self.base_url, headers=self._headers, timeout=5.0) as http:
            for start in range(0, len(leftover), self.batch_size):
                gen = _transport.deliver(
                    leftover[start : start + self.batch_size], self._delivery(lambda: False)
                )
                _transport.run_sync(gen, http, time.sleep)

    async def __aenter__(self) -> AsyncMeterline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _reader(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = self._client()
        return self._http

    async def customer_state(
        self, *, customer_id: str | None = None, external_id: str | None = None
    ) -> dict[str, Any]:
        return _decode(await self._reader().get(_state_path(customer_id, external_id)))

    async def customer_meters(
        self,
        *,
        customer_id: str | list[str] | None = None,
        external_customer_id: str | list[str] | None = None,
        meter_id: str | list[str] | None = None,
        page: int = 1,
        limit: int = 10,
    ) -> dict[str, Any]:
        params = _params(
            customer_id=customer_id,
            external_customer_id=external_customer_id,
            meter_id=meter_id,
            page=page,
            limit=limit,
        )
        return _decode(await self._reader().get("/v1/customer-meters/", params=params))
