"""Metering strategies: each wraps something the application already uses and emits one event
per measured occurrence (see ``docs/sdk.md``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from meterline.strategies._base import Emitter, Sink
from meterline.strategies.delta_time import DeltaTimer
from meterline.strategies.llm import LLMUsage, extract_usage, usage_metadata, wrap_llm_client
from meterline.strategies.s3 import instrument_s3
from meterline.strategies.stream import wrap_stream

__all__ = ["DeltaTimer", "Emitter", "LLMUsage", "Strategies", "extract_usage"]

T = TypeVar("T")
CostCallback = Callable[[LLMUsage], Any]


class Strategies:
    """Mixed into both clients; ``self.ingest`` is the sink."""

    def _emitter(
        self,
        strategy: str,
        name: str,
        customer: str | None,
        customer_id: str | None,
        metadata: Mapping[str, Any] | None,
        parent_id: str | None = None,
    ) -> Emitter:
        sink: Sink = self  # type: ignore[assignment]
        return Emitter.make(
            sink,
            strategy,
            name=name,
            customer=customer,
            customer_id=customer_id,
            metadata=metadata,
            parent_id=parent_id,
        )

    def llm(
        self,
        client: T,
        *,
        customer: str | None = None,
        customer_id: str | None = None,
        name: str = "llm.completion",
        vendor: str | None = None,
        cost: CostCallback | None = None,
        metadata: Mapping[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> T:
        """Wrap an ``openai.OpenAI`` / ``AsyncOpenAI`` (or compatible) client: one event per
        Chat Completions / Responses call, with the token usage the server reported."""
        emitter = self._emitter("llm", name, customer, customer_id, metadata, parent_id)
        return wrap_llm_client(client, emitter, vendor=vendor, cost=cost)

    def record_usage(
        self,
        result: Any,
        *,
        customer: str | None = None,
        customer_id: str | None = None,
        name: str = "llm.completion",
        model: str | None = None,
        vendor: str | None = None,
        cost: CostCallback | None = None,
        metadata: Mapping[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> str | None:
        """Record one LLM call from any response or dict carrying a usage block (OpenAI Chat
        Completions or Responses shape, Anthropic shape) or a PydanticAI run result.
        Returns the event's ``external_id``; None when no usage could be read."""
        emitter = self._emitter("llm", name, customer, customer_id, metadata, parent_id)
        usage = extract_usage(result, model=model, vendor=vendor)
        if usage is None:
            logging.getLogger("meterline").warning(
                "meterline: no usage block found in %s", type(result).__name__
            )
            return None
        return emitter.emit(usage_metadata(usage, cost))

    def stream(
        self,
        source: T,
        *,
        customer: str | None = None,
        customer_id: str | None = None,
        name: str = "stream",
        metadata: Mapping[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> T:
        """Wrap a sync/async iterator of bytes/str or a file-like object: one event with
        ``bytes``, ``chunks`` and ``duration_seconds`` when it ends, is closed, or fails."""
        emitter = self._emitter("stream", name, customer, customer_id, metadata, parent_id)
        return wrap_stream(source, emitter)

    def s3(
        self,
        client: T,
        *,
        customer: str | None = None,
        customer_id: str | None = None,
        name: str = "s3.transfer",
        metadata: Mapping[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> T:
        """Instrument a boto3 S3 client in place (botocore event hooks) and return it."""
        emitter = self._emitter("s3", name, customer, customer_id, metadata, parent_id)
        return instrument_s3(client, emitter)

    def delta_time(
        self,
        *,
        customer: str | None = None,
        customer_id: str | None = None,
        name: str = "delta_time",
        metadata: Mapping[str, Any] | None = None,
        parent_id: str | None = None,
    ) -> DeltaTimer:
        """A timer usable as ``with``/``async with`` block, decorator (sync and async) or
        ``start()``/``stop()`` pair; emits ``duration_seconds`` (monotonic clock)."""
        emitter = self._emitter("delta_time", name, customer, customer_id, metadata, parent_id)
        return DeltaTimer(emitter)
