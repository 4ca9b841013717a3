"""An OpenAI-compatible HTTP server for the tests: Chat Completions and Responses, JSON and
server-sent-event streaming, with usage blocks derived from the request. Every usage block it
sends is recorded in ``usages`` (in order) so tests compare stored events with it."""

from __future__ import annotations

import json
from typing import Any

from ._servers import HTTPServerThread

WORDS = ["Metered", " tokens", " are", " billed", " exactly", "."]


def _usage_numbers(payload: dict[str, Any]) -> tuple[int, int, int]:
    text = json.dumps(payload.get("messages") or payload.get("input"))
    prompt = len(text)  # deterministic, distinct per request
    completion = len(WORDS) + (payload.get("max_tokens") or payload.get("max_output_tokens") or 0)
    cached = prompt // 4
    return prompt, completion, cached


class OpenAIServer(HTTPServerThread):
    def __init__(self) -> None:
        self.usages: list[dict[str, Any]] = []
        self.payloads: list[dict[str, Any]] = []
        super().__init__(self._handle)

    def _handle(self, request, raw) -> None:
        payload = request.json()
        self.payloads.append(payload)
        if payload.get("model") == "missing":
            error = {"error": {"message": "model not found", "type": "invalid_request_error"}}
            data = json.dumps(error).encode()
            raw.send_response(404)
            raw.send_header("Content-Type", "application/json")
            raw.send_header("Content-Length", str(len(data)))
            raw.end_headers()
            raw.wfile.write(data)
        elif request.path.endswith("/chat/completions"):
            self._chat(payload, raw)
        elif request.path.endswith("/responses"):
            self._responses(payload, raw)
        else:
            raw.send_response(404)
            raw.send_header("Content-Length", "0")
            raw.end_headers()

    # --- helpers -------------------------------------------------------------------------
    def _json(self, raw, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        raw.send_response(200)
        raw.send_header("Content-Type", "application/json")
        raw.send_header("Content-Length", str(len(data)))
        raw.end_headers()
        raw.wfile.write(data)

    def _sse(self, raw, events: list[tuple[str | None, Any]]) -> None:
        raw.send_response(200)
        raw.send_header("Content-Type", "text/event-stream")
        raw.send_header("Cache-Control", "no-cache")
        raw.send_header("Connection", "close")
        raw.end_headers()
        for name, data in events:
            chunk = "" if name is None else f"event: {name}\n"
            chunk += "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n"
            raw.wfile.write(chunk.encode())
            raw.wfile.flush()
        raw.close_connection = True

    # --- Chat Completions ----------------------------------------------------------------
    def _chat(self, payload: dict[str, Any], raw) -> None:
        prompt, completion, cached = _usage_numbers(payload)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        model = payload["model"]
        base = {"id": "chatcmpl-1", "created": 1_700_000_000, "model": model}
        if not payload.get("stream"):
            self.usages.append(usage)
            self._json(
                raw,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(WORDS)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        chunk = {**base, "object": "chat.completion.chunk"}
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        events: list[tuple[str | None, Any]] = []
        for i, word in enumerate(WORDS):
            delta = {"content": word} if i else {"role": "assistant", "content": word}
            item = {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            if include_usage:
                item["usage"] = None
            events.append((None, item))
        last = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if include_usage:
            last["usage"] = None
        events.append((None, last))
        if include_usage:
            self.usages.append(usage)
            events.append((None, {**chunk, "choices": [], "usage": usage}))
        events.append((None, "[DONE]"))
        self._sse(raw, events)

    # --- Responses -----------------------------------------------------------------------
    def _responses(self, payload: dict[str, Any], raw) -> None:
        prompt, completion, cached = _usage_numbers(payload)
        usage = {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        self.usages.append(usage)
        response = {
            "id": "resp_1",
            "object": "response",
            "created_at": 1_700_000_000,
            "model": payload["model"],
            "status": "completed",
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "output": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "".join(WORDS), "annotations": []}],
                }
            ],
            "usage": usage,
        }
        if not payload.get("stream"):
            self._json(raw, response)
            return
        in_progress = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[tuple[str | None, Any]] = [
            (
                "response.created",
                {"type": "response.created", "sequence_number": 0, "response": in_progress},
            )
        ]
        for i, word in enumerate(WORDS, start=1):
            events.append(
                (
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": i,
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": word,
                        "logprobs": [],
                    },
                )
            )
        events.append(
            (
                "response.completed",
                {
                    "type": "response.completed",
                    "sequence_number": len(WORDS) + 1,
                    "response": response,
                },
            )
        )
        self._sse(raw, events)
