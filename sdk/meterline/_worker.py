"""Background batching: a bounded queue drained by one daemon thread (or one asyncio task)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable

from meterline._events import Event

logger = logging.getLogger("meterline")

_POLL = 0.05  # seconds between checks for a flush request while a batch fills


class ThreadWorker:
    """Events are put without blocking; the worker sends a batch when it holds ``batch_size``
    events, ``flush_interval`` seconds after its first event, or at once when a flush is asked."""

    def __init__(
        self,
        send_batch: Callable[[list[Event]], None],
        *,
        batch_size: int,
        flush_interval: float,
        max_queue_size: int,
    ) -> None:
        self._send_batch = send_batch
        self._batch_size = batch_size
        self._interval = flush_interval
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=max_queue_size)
        self._cond = threading.Condition()
        self._unfinished = 0
        self._flush_now = threading.Event()
        self._stop = threading.Event()
        self.abort = threading.Event()
        self._thread: threading.Thread | None = None

    def put(self, event: Event) -> bool:
        """Queue ``event``; False when the queue is full (the event is not queued)."""
        if self._stop.is_set():
            return False
        self._ensure_started()
        with self._cond:
            self._unfinished += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._done(1)
            return False
        return True

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="meterline-ingest", daemon=True
                )
                self._thread.start()

    def _done(self, n: int) -> None:
        with self._cond:
            self._unfinished -= n
            if self._unfinished <= 0:
                self._flush_now.clear()
                self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return self._unfinished

    def _collect(self) -> list[Event] | None:
        try:
            first = self._queue.get(timeout=_POLL)
        except queue.Empty:
            return None
        batch = [first]
        deadline = time.monotonic() + self._interval
        while len(batch) < self._batch_size:
            urgent = self._flush_now.is_set() or self._stop.is_set()
            remaining = deadline - time.monotonic()
            try:
                if urgent or remaining <= 0:
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(self._queue.get(timeout=min(remaining, _POLL)))
            except queue.Empty:
                if urgent or remaining <= 0:
                    break
        return batch

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._collect()
            if batch is None:
                continue
            try:
                self._send_batch(batch)
            except Exception:  # never let the worker die
                logger.exception("meterline: unexpected error while sending %d events", len(batch))
            finally:
                self._done(len(batch))

    def flush(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._unfinished <= 0:
                return True
            self._flush_now.set()
            while self._unfinished > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float | None) -> bool:
        """Send what is queued, waiting at most ``timeout``; then stop the thread. If time runs
        out, ``abort`` is set so retries stop, and the unsent events count as failed."""
        start = time.monotonic()
        delivered = self.flush(timeout)
        self._stop.set()
        if not delivered:
            self.abort.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
            thread.join(remaining if delivered else min(remaining or 1.0, 1.0))
        return delivered

    def drain(self) -> list[Event]:
        """Take whatever is still queued (used after an aborted close)."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if out:
            self._done(len(out))
        return out


class AsyncWorker:
    """The asyncio twin of ThreadWorker: an ``asyncio.Queue`` drained by one task, started on
    the first event in the running loop. Events from other threads are handed over with
    ``call_soon_threadsafe``."""

    def __init__(
        self,
        send_batch: Callable[[list[Event]], Awaitable[None]],
        *,
        batch_size: int,
        flush_interval: float,
        max_queue_size: int,
        on_drop: Callable[[int], None],
    ) -> None:
        self._send_batch = send_batch
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max = max_queue_size
        self._on_drop = on_drop
        self._queue: asyncio.Queue[Event] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._unfinished = 0
        self._idle: asyncio.Event | None = None
        self._flush_now: asyncio.Event | None = None
        self._stopping = False
        self.abort = False

    def put(self, event: Event) -> bool:
        if self._stopping:
            return False
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and (self._loop is None or self._loop is running):
            return self._put_in_loop(event)
        loop = self._loop
        if loop is None or loop.is_closed():
            return False  # no loop to hand the event to
        loop.call_soon_threadsafe(self._put_from_thread, event)
        return True

    def _put_from_thread(self, event: Event) -> None:
        if not self._put_in_loop(event):
            self._on_drop(1)

    def _put_in_loop(self, event: Event) -> bool:
        if self._queue is None or self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            if self._queue is None:
                self._queue = asyncio.Queue(maxsize=self._max)
                self._idle = asyncio.Event()
                self._idle.set()
                self._flush_now = asyncio.Event()
            self._task = self._loop.create_task(self._run(), name="meterline-ingest")
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        self._unfinished += 1
        assert self._idle is not None
        self._idle.clear()
        return True

    async def _collect(self) -> list[Event]:
        assert self._queue is not None and self._flush_now is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self._interval
        while len(batch) < self._batch_size:
            if self._flush_now.is_set() or self._stopping or time.monotonic() >= deadline:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    break
            try:
                remaining = deadline - time.monotonic()
                batch.append(await asyncio.wait_for(self._queue.get(), min(remaining, _POLL)))
            except TimeoutError:
                continue
        return batch

    async def _run(self) -> None:
        assert self._idle is not None and self._flush_now is not None
        while True:
            batch = await self._collect()
            try:
                await self._send_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("meterline: unexpected error while sending %d events", len(batch))
            finally:
                self._unfinished -= len(batch)
                if self._unfinished <= 0:
                    self._flush_now.clear()
                    self._idle.set()

    async def flush(self, timeout: float | None) -> bool:
        if self._idle is None or self._unfinished <= 0:
            return True
        assert self._flush_now is not None
        self._flush_now.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float | None) -> bool:
        delivered = await self.flush(timeout)
        self._stopping = True
        if not delivered:
            self.abort = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        return delivered

    def drain(self) -> list[Event]:
        out: list[Event] = []
        if self._queue is None:
            return out
        while True:
            try:
                out.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        self._unfinished -= len(out)
        return out
