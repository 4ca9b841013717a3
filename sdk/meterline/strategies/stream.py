"""Stream: bytes and chunks passing through an iterator or a file-like object.

One event when the stream ends (iterator exhausted), is closed (``close()``, ``with`` exit or
garbage collection) or fails (the exception propagates unchanged); it carries what was counted.
``bytes`` counts ``bytes``/``bytearray``/``memoryview`` lengths and the UTF-8 length of ``str``
chunks; ``chunks`` counts non-empty chunks; ``duration_seconds`` runs from the first read (or
write, or ``next``) to the end.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from meterline.strategies._base import Emitter


def _size(chunk: Any) -> int:
    if isinstance(chunk, str):
        return len(chunk.encode("utf-8"))
    if isinstance(chunk, memoryview):
        return chunk.nbytes
    if isinstance(chunk, bytes | bytearray):
        return len(chunk)
    return 0


class _Meter:
    def __init__(self, emitter: Emitter, extra: dict[str, Any] | None = None) -> None:
        self._emitter = emitter
        self._extra = extra or {}
        self.bytes = 0
        self.chunks = 0
        self._started: float | None = None
        self._done = False
        self._lock = threading.Lock()

    def begin(self) -> None:
        if self._started is None:
            self._started = time.monotonic()

    def count(self, nbytes: int, chunks: int = 1) -> None:
        if nbytes > 0 or chunks > 0:
            self.bytes += nbytes
            self.chunks += chunks

    def finish(self, error: BaseException | None = None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        # microseconds: the server accepts numbers with at most 20 decimal places
        duration = 0.0 if self._started is None else round(time.monotonic() - self._started, 6)
        measured: dict[str, Any] = {
            **self._extra,
            "bytes": self.bytes,
            "chunks": self.chunks,
            "duration_seconds": duration,
        }
        if error is not None:
            measured["error"] = type(error).__name__
        self._emitter.emit(measured)


class MeteredIterator:
    """Yields exactly what the wrapped iterator yields."""

    def __init__(self, source: Any, emitter: Emitter) -> None:
        self._source = source
        self._iter = iter(source)
        self._meter = _Meter(emitter)

    def __iter__(self) -> MeteredIterator:
        return self

    def __next__(self) -> Any:
        self._meter.begin()
        try:
            chunk = next(self._iter)
        except StopIteration:
            self._meter.finish()
            raise
        except BaseException as exc:
            self._meter.finish(exc)
            raise
        size = _size(chunk)
        if size or not isinstance(chunk, str | bytes | bytearray | memoryview):
            self._meter.count(size)
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self._iter, "close", None) or getattr(self._source, "close", None)
            if close is not None:
                close()
        finally:
            self._meter.finish()

    def __enter__(self) -> MeteredIterator:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self._meter.finish(exc)
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def __del__(self) -> None:
        meter = self.__dict__.get("_meter")
        if meter is not None:
            meter.finish()


class MeteredAsyncIterator:
    """Yields exactly what the wrapped async iterator yields."""

    def __init__(self, source: Any, emitter: Emitter) -> None:
        self._source = source
        self._iter = source.__aiter__()
        self._meter = _Meter(emitter)

    def __aiter__(self) -> MeteredAsyncIterator:
        return self

    async def __anext__(self) -> Any:
        self._meter.begin()
        try:
            chunk = await self._iter.__anext__()
        except StopAsyncIteration:
            self._meter.finish()
            raise
        except BaseException as exc:
            self._meter.finish(exc)
            raise
        size = _size(chunk)
        if size or not isinstance(chunk, str | bytes | bytearray | memoryview):
            self._meter.count(size)
        return chunk

    async def aclose(self) -> None:
        try:
            close = getattr(self._iter, "aclose", None) or getattr(self._source, "aclose", None)
            if close is not None:
                await close()
        finally:
            self._meter.finish()

    async def close(self) -> None:
        await self.aclose()

    async def __aenter__(self) -> MeteredAsyncIterator:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self._meter.finish(exc)
        await self.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def __del__(self) -> None:
        meter = self.__dict__.get("_meter")
        if meter is not None:
            meter.finish()


class MeteredFile:
    """A file-like proxy counting what is read and written; every other attribute is the
    wrapped file's. Emits on ``close()`` / ``with`` exit / failure. Metadata ``direction``
    is ``read``, ``write`` or ``read_write``."""

    def __init__(self, source: Any, emitter: Emitter) -> None:
        self._source = source
        self._meter = _Meter(emitter)
        self._read = False
        self._written = False

    # --- helpers -------------------------------------------------------------------------
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._meter.begin()
        try:
            return getattr(self._source, method)(*args, **kwargs)
        except BaseException as exc:
            self._finish(exc)
            raise

    def _finish(self, error: BaseException | None = None) -> None:
        direction = (
            "read_write" if self._read and self._written else "write" if self._written else "read"
        )
        self._meter._extra = {"direction": direction}
        self._meter.finish(error)

    def _got(self, data: Any) -> Any:
        self._read = True
        size = _size(data)
        if size:
            self._meter.count(size)
        return data

    # --- reading -------------------------------------------------------------------------
    def read(self, *args: Any) -> Any:
        return self._got(self._call("read", *args))

    def read1(self, *args: Any) -> Any:
        return self._got(self._call("read1", *args))

    def readline(self, *args: Any) -> Any:
        return self._got(self._call("readline", *args))

    def readlines(self, *args: Any) -> list[Any]:
        lines = self._call("readlines", *args)
        self._read = True
        for line in lines:
            size = _size(line)
            if size:
                self._meter.count(size)
        return lines

    def readinto(self, buffer: Any) -> Any:
        n = self._call("readinto", buffer)
        self._read = True
        if n:
            self._meter.count(n)
        return n

    def readinto1(self, buffer: Any) -> Any:
        n = self._call("readinto1", buffer)
        self._read = True
        if n:
            self._meter.count(n)
        return n

    def __iter__(self) -> MeteredFile:
        return self

    def __next__(self) -> Any:
        self._meter.begin()
        try:
            line = next(self._source)
        except StopIteration:
            raise
        except BaseException as exc:
            self._finish(exc)
            raise
        return self._got(line)

    # --- writing -------------------------------------------------------------------------
    def write(self, data: Any) -> Any:
        result = self._call("write", data)
        self._written = True
        if isinstance(data, str):
            written = data[:result] if isinstance(result, int) else data
            size = _size(written)
        else:
            size = result if isinstance(result, int) else _size(data)
        if size:
            self._meter.count(size)
        return result

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    # --- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        try:
            self._source.close()
        finally:
            self._finish()

    def __enter__(self) -> MeteredFile:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self._finish(exc)
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def __del__(self) -> None:
        if "_meter" in self.__dict__:
            self._finish()


def wrap_stream(source: Any, emitter: Emitter) -> Any:
    if hasattr(source, "read") or hasattr(source, "write"):
        return MeteredFile(source, emitter)
    if hasattr(source, "__aiter__"):
        return MeteredAsyncIterator(source, emitter)
    if hasattr(source, "__iter__") or hasattr(source, "__next__"):
        return MeteredIterator(source, emitter)
    raise TypeError(f"cannot meter {type(source).__name__}: not an iterator or file-like object")
