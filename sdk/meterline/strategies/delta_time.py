"""Delta time: how long some code ran (``time.monotonic()``), emitted also when it raises."""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meterline.strategies._base import Emitter

F = TypeVar("F", bound=Callable[..., Any])


class DeltaTimer:
    """One timer configuration; each ``with`` block, each decorated call and each
    ``start()``/``stop()`` pair is a separate measurement and a separate event with
    ``duration_seconds`` (float, rounded to microseconds). When the measured code raises, the
    event carries
    ``error`` (the exception's class name) and the exception propagates unchanged."""

    def __init__(self, emitter: Emitter) -> None:
        self._emitter = emitter
        self._local = threading.local()  # stack of start times for nested/per-thread use
        self._started: float | None = None
        self.last_duration: float | None = None

    # --- measurements ----------------------------------------------------------------------
    def _emit(self, started: float, error: BaseException | None) -> float:
        # microseconds: the server accepts numbers with at most 20 decimal places
        duration = round(time.monotonic() - started, 6)
        self.last_duration = duration
        measured: dict[str, Any] = {"duration_seconds": duration}
        if error is not None:
            measured["error"] = type(error).__name__
        self._emitter.emit(measured)
        return duration

    def _stack(self) -> list[float]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    # --- context manager -------------------------------------------------------------------
    def __enter__(self) -> DeltaTimer:
        self._stack().append(time.monotonic())
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._emit(self._stack().pop(), exc)
        # returning None: an exception propagates unchanged

    async def __aenter__(self) -> DeltaTimer:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    # --- decorator -------------------------------------------------------------------------
    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.monotonic()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    self._emit(started, exc)
                    raise
                self._emit(started, None)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self._emit(started, exc)
                raise
            self._emit(started, None)
            return result

        return wrapper  # type: ignore[return-value]

    # --- start / stop ------------------------------------------------------------------------
    def start(self) -> DeltaTimer:
        self._started = time.monotonic()
        return self

    def stop(self, error: BaseException | None = None) -> float | None:
        """Emit the measurement begun by ``start()``; returns its duration (None if not
        started). Pass ``error`` to record that the measured work failed."""
        started, self._started = self._started, None
        if started is None:
            return None
        return self._emit(started, error)
