"""Delivery of one batch: retries, backoff, 422 splitting, 413 halving, counters.

The policy is written once as a generator that yields *actions* (send this body / sleep this
long) and receives their results; a blocking driver (threads) and an asyncio driver run it.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from meterline._events import Event, dumps

logger = logging.getLogger("meterline")

INGEST_PATH = "/v1/events/ingest"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class IngestStats:
    """Counters of events: ``sent`` (stored by the server), ``duplicates`` (already stored:
    a retry of a batch the server had committed, or a caller-supplied ``external_id`` seen
    before), ``failed`` (given up: rejected by the server or retries exhausted), ``dropped``
    (not queued: queue full or client closed), ``retries`` (HTTP attempts repeated)."""

    sent: int = 0
    duplicates: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = {"sent": 0, "duplicates": 0, "failed": 0, "dropped": 0, "retries": 0}

    def add(self, **amounts: int) -> None:
        with self._lock:
            for key, amount in amounts.items():
                self._values[key] += amount

    def snapshot(self) -> IngestStats:
        with self._lock:
            return IngestStats(**self._values)


@dataclass
class IngestError:
    """A delivery problem reported to ``on_error``: the events concerned were not stored."""

    message: str
    events: list[Event]
    status_code: int | None = None
    detail: Any = None
    retryable: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt *n* sleeps ``uniform(0, min(max, base*2**n))``;
    a ``Retry-After`` header (seconds or HTTP date, capped at ``max_retry_after``) is slept
    exactly instead. ``max_retries`` counts repeated attempts after the first one."""

    max_retries: int = 10
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 300.0

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))


def parse_retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


@dataclass
class Send:
    body: bytes


@dataclass
class Sleep:
    seconds: float


@dataclass
class Delivery:
    """Callbacks shared by the drivers."""

    policy: RetryPolicy
    counters: Counters
    report: Callable[[IngestError], None]
    aborted: Callable[[], bool] = field(default=lambda: False)


def _split_unencodable(batch: list[Event]) -> tuple[list[Event], list[Event]]:
    good, bad = [], []
    for event in batch:
        try:
            dumps(event)
        except (TypeError, ValueError):
            bad.append(event)
        else:
            good.append(event)
    return good, bad


def _invalid_indices(response: httpx.Response, size: int) -> tuple[set[int] | None, Any]:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None, response.text[:2000]
    indices: set[int] = set()
    if not isinstance(detail, list):
        return None, detail
    for item in detail:
        loc = item.get("loc") if isinstance(item, dict) else None
        if (
            isinstance(loc, list)
            and len(loc) >= 3
            and loc[:2] == ["body", "events"]
            and isinstance(loc[2], int)
            and 0 <= loc[2] < size
        ):
            indices.add(loc[2])
        else:
            return None, detail  # a problem not attributable to one event
    return indices or None, detail


def deliver(batch: list[Event], ctx: Delivery) -> Generator[Send | Sleep, Any, None]:
    """Deliver ``batch`` (all events already carry an ``external_id``, so resending after an
    unknown outcome cannot double-count)."""
    pending = [batch]
    while pending:
        events = pending.pop()
        good, bad = _split_unencodable(events)
        if bad:
            ctx.counters.add(failed=len(bad))
            ctx.report(IngestError("event is not JSON serializable (or has NaN/Infinity)", bad))
        events = good
        attempt = 0
        while events:
            result = yield Send(dumps({"events": events}))
            retry_after: float | None = None
            if isinstance(result, httpx.Response):
                status = result.status_code
                if 200 <= status < 300:
                    try:
                        data = result.json()
                        inserted, duplicates = int(data["inserted"]), int(data["duplicates"])
                    except (ValueError, KeyError, TypeError):
                        inserted, duplicates = len(events), 0
                    ctx.counters.add(sent=inserted, duplicates=duplicates)
                    break
                if status == 413 and len(events) > 1:
                    half = len(events) // 2
                    pending.extend([events[half:], events[:half]])
                    break
                if status == 422:
                    indices, detail = _invalid_indices(result, len(events))
                    if indices is not None and len(indices) < len(events):
                        rejected = [e for i, e in enumerate(events) if i in indices]
                        ctx.counters.add(failed=len(rejected))
                        ctx.report(
                            IngestError("events rejected by the server", rejected, 422, detail)
                        )
                        # the batch is all-or-nothing: send the valid rest (not a retry of
                        # the rejected ones, which are never sent again)
                        events = [e for i, e in enumerate(events) if i not in indices]
                        continue
                    ctx.counters.add(failed=len(events))
                    ctx.report(IngestError("events rejected by the server", events, 422, detail))
                    break
                if status not in RETRYABLE_STATUS and status < 500:
                    ctx.counters.add(failed=len(events))
                    ctx.report(
                        IngestError(
                            f"ingest failed with HTTP {status}", events, status, result.text[:2000]
                        )
                    )
                    break
                retry_after = parse_retry_after(
                    result.headers.get("retry-after"), ctx.policy.max_retry_after
                )
                reason = f"HTTP {status}"
            else:
                reason = f"{type(result).__name__}: {result}"
            if attempt >= ctx.policy.max_retries or ctx.aborted():
                ctx.counters.add(failed=len(events))
                why = "client closed" if ctx.aborted() else f"gave up after {attempt + 1} attempts"
                ctx.report(
                    IngestError(
                        f"ingest failed ({why}; last error {reason})",
                        events,
                        result.status_code if isinstance(result, httpx.Response) else None,
                        retryable=True,
                    )
                )
                break
            delay = retry_after if retry_after is not None else ctx.policy.backoff(attempt)
            logger.info("meterline: %s, retrying %d events in %.2fs", reason, len(events), delay)
            attempt += 1
            ctx.counters.add(retries=1)
            yield Sleep(delay)


def run_sync(
    gen: Generator[Send | Sleep, Any, None],
    http: httpx.Client,
    sleep: Callable[[float], None],
) -> None:
    try:
        action = next(gen)
        while True:
            if isinstance(action, Sleep):
                sleep(action.seconds)
                result: Any = None
            else:
                try:
                    result = http.post(
                        INGEST_PATH,
                        content=action.body,
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    result = exc
            action = gen.send(result)
    except StopIteration:
        pass


async def run_async(
    gen: Generator[Send | Sleep, Any, None],
    http: httpx.AsyncClient,
    sleep: Callable[[float], Any],
) -> None:
    try:
        action = next(gen)
        while True:
            if isinstance(action, Sleep):
                await sleep(action.seconds)
                result: Any = None
            else:
                try:
                    result = await http.post(
                        INGEST_PATH,
                        content=action.body,
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    result = exc
            action = gen.send(result)
    except StopIteration:
        pass
