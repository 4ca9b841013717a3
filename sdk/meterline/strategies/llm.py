"""LLM: token usage of OpenAI-compatible clients, any usage block, and PydanticAI results.

``wrap_llm_client`` returns a proxy of an ``openai.OpenAI``/``AsyncOpenAI`` client whose
``chat.completions.create``/``parse`` and ``responses.create``/``parse`` emit one event per call;
everything else is the client's own. Streaming Chat Completions: when the caller did not ask
for ``stream_options={"include_usage": True}`` it is requested, and the extra usage-only final
chunk (``choices == []``) it causes is consumed by the proxy, so the caller sees exactly the
chunks it would have seen without metering. Responses streams always carry usage in their
``response.completed`` event. A stream that is abandoned before its usage arrived emits
nothing (logged at warning): the tokens are unknown.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from meterline.strategies._base import Emitter

logger = logging.getLogger("meterline")

_KNOWN_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.groq.com": "groq",
    "openrouter.ai": "openrouter",
    "api.mistral.ai": "mistral",
    "api.deepseek.com": "deepseek",
    "api.together.xyz": "together",
    "api.fireworks.ai": "fireworks",
    "generativelanguage.googleapis.com": "google",
    "api.x.ai": "xai",
}


@dataclass(frozen=True)
class LLMUsage:
    """Normalised usage. ``input_tokens`` includes cached input (``cached_input_tokens`` is
    the cached part); for Anthropic, ``input_tokens`` = input + cache read + cache creation."""

    model: str
    vendor: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    total_tokens: int


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _has(obj: Any, key: str) -> bool:
    if isinstance(obj, Mapping):
        return key in obj
    return hasattr(obj, key)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def vendor_from_base_url(base_url: Any) -> str:
    host = (urlsplit(str(base_url or "")).hostname or "").lower()
    if not host:
        return "openai"
    for known, vendor in _KNOWN_HOSTS.items():
        if host == known or host.endswith("." + known):
            return vendor
    if host.endswith("openai.azure.com"):
        return "azure"
    return "openai-compatible"


def normalize_usage(usage: Any, *, model: str | None, vendor: str | None) -> LLMUsage | None:
    """Read an OpenAI (Chat Completions or Responses), Anthropic or PydanticAI usage block."""
    if usage is None:
        return None
    if _get(usage, "prompt_tokens") is not None or _get(usage, "completion_tokens") is not None:
        inp = _int(_get(usage, "prompt_tokens"))
        out = _int(_get(usage, "completion_tokens"))
        cached = _int(_get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
        total = _int(_get(usage, "total_tokens")) or inp + out
        default_vendor = "openai"
    elif _has(usage, "cache_read_input_tokens") or _has(usage, "cache_creation_input_tokens"):
        cached = _int(_get(usage, "cache_read_input_tokens"))
        created = _int(_get(usage, "cache_creation_input_tokens"))
        inp = _int(_get(usage, "input_tokens")) + cached + created
        out = _int(_get(usage, "output_tokens"))
        total = inp + out
        default_vendor = "anthropic"
    elif _get(usage, "input_tokens") is not None or _get(usage, "output_tokens") is not None:
        inp = _int(_get(usage, "input_tokens"))
        out = _int(_get(usage, "output_tokens"))
        cached = _int(_get(_get(usage, "input_tokens_details"), "cached_tokens")) or _int(
            _get(usage, "cache_read_tokens")  # PydanticAI RunUsage
        )
        total = _int(_get(usage, "total_tokens")) or inp + out
        default_vendor = "openai" if _has(usage, "input_tokens_details") else "unknown"
    elif _get(usage, "request_tokens") is not None or _get(usage, "response_tokens") is not None:
        inp = _int(_get(usage, "request_tokens"))  # older PydanticAI Usage
        out = _int(_get(usage, "response_tokens"))
        cached = 0
        total = _int(_get(usage, "total_tokens")) or inp + out
        default_vendor = "unknown"
    else:
        return None
    return LLMUsage(
        model=str(model or "unknown")[:500],
        vendor=str(vendor or default_vendor)[:500],
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=cached,
        total_tokens=total,
    )


def _looks_like_usage(obj: Any) -> bool:
    return any(
        _has(obj, key)
        for key in ("prompt_tokens", "input_tokens", "output_tokens", "request_tokens")
    )


def extract_usage(
    result: Any, *, model: str | None = None, vendor: str | None = None
) -> LLMUsage | None:
    """Find the usage block of ``result``: a response object or dict with ``usage``, a usage
    block itself, or a PydanticAI run result (``result.usage`` / ``result.usage()``)."""
    if not isinstance(result, Mapping):
        usage_attr = getattr(result, "usage", None)
        if callable(usage_attr) and not _looks_like_usage(usage_attr):
            try:  # PydanticAI < 2: ``result.usage()``
                usage_attr = usage_attr()
            except Exception:
                logger.exception("meterline: result.usage() raised")
                return None
        response = getattr(result, "response", None)
        if _get(response, "model_name") is not None:  # PydanticAI run result
            model = model or _get(response, "model_name")
            vendor = vendor or _get(response, "provider_name")
            return normalize_usage(usage_attr, model=model, vendor=vendor)
        usage = usage_attr
    else:
        usage = result.get("usage")
    if usage is None:
        usage = result  # maybe the usage block itself
    model = model or _get(result, "model")
    if vendor is None and _get(result, "type") == "message" and _get(result, "role"):
        vendor = "anthropic"  # Anthropic Messages response
    return normalize_usage(usage, model=model, vendor=vendor)


def _cost(callback: Callable[[LLMUsage], Any] | None, usage: LLMUsage) -> dict[str, Any] | None:
    if callback is None:
        return None
    try:
        value = callback(usage)
    except Exception:
        logger.exception("meterline: cost callback raised; event sent without _cost")
        return None
    if value is None:
        return None
    if isinstance(value, Mapping):
        amount, currency = value.get("amount"), value.get("currency", "usd")
    elif isinstance(value, tuple):
        amount, currency = value
    else:
        amount, currency = value, "usd"
    if isinstance(amount, Decimal):
        amount = str(amount)  # decimal string: exact fractional cents
    return {"amount": amount, "currency": str(currency).lower()}


def usage_metadata(
    usage: LLMUsage, cost: Callable[[LLMUsage], Any] | None = None
) -> dict[str, Any]:
    llm = {
        "vendor": usage.vendor,
        "model": usage.model,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "total_tokens": usage.total_tokens,
    }
    metadata: dict[str, Any] = {**llm, "_llm": llm}
    cost_block = _cost(cost, usage)
    if cost_block is not None:
        metadata["_cost"] = cost_block
    return metadata


class _Recorder:
    def __init__(
        self, emitter: Emitter, vendor: str, cost: Callable[[LLMUsage], Any] | None
    ) -> None:
        self.emitter = emitter
        self.vendor = vendor
        self.cost = cost

    def record(self, usage: Any, model: Any) -> None:
        try:
            normalized = normalize_usage(usage, model=model, vendor=self.vendor)
            if normalized is None:
                logger.warning("meterline: LLM response without usage; nothing recorded")
                return
            self.emitter.emit(usage_metadata(normalized, self.cost))
        except Exception:
            logger.exception("meterline: could not record LLM usage")


def _is_usage_only_chunk(chunk: Any) -> bool:
    return _get(chunk, "usage") is not None and not _get(chunk, "choices")


class _StreamObserver:
    def __init__(self, recorder: _Recorder, kind: str, hide_usage_chunk: bool) -> None:
        self.recorder = recorder
        self.kind = kind
        self.hide = hide_usage_chunk
        self.usage: Any = None
        self.model: Any = None
        self.done = False

    def observe(self, item: Any) -> bool:
        """Note usage in ``item``; True when the item is to be passed to the caller."""
        try:
            if self.kind == "chat":
                if _get(item, "model"):
                    self.model = _get(item, "model")
                if _get(item, "usage") is not None:
                    self.usage = _get(item, "usage")
                    return not (self.hide and _is_usage_only_chunk(item))
            else:
                response = _get(item, "response")
                if response is not None and _get(response, "usage") is not None:
                    self.usage = _get(response, "usage")
                    self.model = _get(response, "model") or self.model
        except Exception:
            logger.exception("meterline: could not read a stream item")
        return True

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.usage is None:
            logger.warning("meterline: LLM stream ended without usage; nothing recorded")
            return
        self.recorder.record(self.usage, self.model)


class MeteredLLMStream:
    """Proxy of ``openai.Stream``: iterates the same items (minus the usage-only chunk the
    proxy requested), records usage once at the end; other attributes are the stream's."""

    def __init__(self, stream: Any, observer: _StreamObserver) -> None:
        self._stream = stream
        self._observer = observer
        self._iterator = iter(stream)

    def __iter__(self) -> MeteredLLMStream:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                item = next(self._iterator)
            except BaseException:
                self._observer.finish()
                raise
            if self._observer.observe(item):
                return item

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._observer.finish()

    def __enter__(self) -> MeteredLLMStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class MeteredAsyncLLMStream:
    """Proxy of ``openai.AsyncStream`` (see ``MeteredLLMStream``)."""

    def __init__(self, stream: Any, observer: _StreamObserver) -> None:
        self._stream = stream
        self._observer = observer
        self._iterator = stream.__aiter__()

    def __aiter__(self) -> MeteredAsyncLLMStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                item = await self._iterator.__anext__()
            except BaseException:
                self._observer.finish()
                raise
            if self._observer.observe(item):
                return item

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._observer.finish()

    async def __aenter__(self) -> MeteredAsyncLLMStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Proxy:
    def __init__(self, target: Any, recorder: _Recorder) -> None:
        self._target = target
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __repr__(self) -> str:
        return f"<metered {self._target!r}>"


class _ResourceProxy(_Proxy):
    """``chat.completions`` or ``responses``: ``create`` and ``parse`` are metered."""

    def __init__(self, target: Any, recorder: _Recorder, kind: str) -> None:
        super().__init__(target, recorder)
        self._kind = kind

    def create(self, *args: Any, **kwargs: Any) -> Any:
        hide = False
        if self._kind == "chat" and kwargs.get("stream") is True:
            options = kwargs.get("stream_options")
            if not isinstance(options, Mapping) or not options.get("include_usage"):
                kwargs["stream_options"] = {**(options or {}), "include_usage": True}
                hide = True
        return self._after(self._target.create(*args, **kwargs), hide)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._after(self._target.parse(*args, **kwargs), False)

    def _after(self, result: Any, hide: bool) -> Any:
        if inspect.isawaitable(result):

            async def finish() -> Any:
                return self._handle(await result, hide)

            return finish()
        return self._handle(result, hide)

    def _handle(self, result: Any, hide: bool) -> Any:
        try:
            if hasattr(result, "__aiter__") and not hasattr(result, "usage"):
                return MeteredAsyncLLMStream(
                    result, _StreamObserver(self._recorder, self._kind, hide)
                )
            if (
                hasattr(result, "__iter__")
                and hasattr(result, "response")
                and not hasattr(result, "usage")
            ):
                return MeteredLLMStream(result, _StreamObserver(self._recorder, self._kind, hide))
            self._recorder.record(_get(result, "usage"), _get(result, "model"))
        except Exception:
            logger.exception("meterline: could not meter an LLM call")
        return result


class _ChatProxy(_Proxy):
    @property
    def completions(self) -> _ResourceProxy:
        return _ResourceProxy(self._target.completions, self._recorder, "chat")


class MeteredLLMClient(_Proxy):
    """The wrapped client: ``chat`` and ``responses`` are metered; ``with_options`` and
    ``copy`` return metered clients; everything else is the client's own."""

    @property
    def chat(self) -> _ChatProxy:
        return _ChatProxy(self._target.chat, self._recorder)

    @property
    def responses(self) -> _ResourceProxy:
        return _ResourceProxy(self._target.responses, self._recorder, "responses")

    def with_options(self, *args: Any, **kwargs: Any) -> MeteredLLMClient:
        return MeteredLLMClient(self._target.with_options(*args, **kwargs), self._recorder)

    def copy(self, *args: Any, **kwargs: Any) -> MeteredLLMClient:
        return MeteredLLMClient(self._target.copy(*args, **kwargs), self._recorder)

    @property
    def unwrapped(self) -> Any:
        return self._target


def wrap_llm_client(
    client: Any,
    emitter: Emitter,
    *,
    vendor: str | None,
    cost: Callable[[LLMUsage], Any] | None,
) -> Any:
    vendor = vendor or vendor_from_base_url(getattr(client, "base_url", None))
    return MeteredLLMClient(client, _Recorder(emitter, vendor, cost))
