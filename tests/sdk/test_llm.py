"""LLM strategy: the real ``openai`` client against an OpenAI-compatible HTTP server written in
the tests; stored events' token counts equal the usage blocks the server returned."""

import asyncio
from decimal import Decimal

import openai
import pytest

from ._openai_server import WORDS, OpenAIServer
from .conftest import stored

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def llm_server():
    with OpenAIServer() as server:
        yield server


def clients(server):
    kwargs = {"api_key": "sk-test", "base_url": server.url + "/v1", "max_retries": 0}
    return openai.OpenAI(**kwargs), openai.AsyncOpenAI(**kwargs)


def expected(usage):
    if "prompt_tokens" in usage:
        return (
            usage["prompt_tokens"],
            usage["completion_tokens"],
            usage["prompt_tokens_details"]["cached_tokens"],
            usage["total_tokens"],
        )
    return (
        usage["input_tokens"],
        usage["output_tokens"],
        usage["input_tokens_details"]["cached_tokens"],
        usage["total_tokens"],
    )


def tokens(event):
    m = event.metadata
    return (m["input_tokens"], m["output_tokens"], m["cached_input_tokens"], m["total_tokens"])


def test_chat_and_responses_sync_async_streaming_and_not(ml, live_org, llm_server, errors):
    sync_client, async_client = clients(llm_server)
    llm = ml.llm(sync_client, customer="u1", name="llm.completion")
    allm = ml.llm(async_client, customer="u1", name="llm.completion")
    seen = {}

    def messages(tag):
        return [{"role": "user", "content": f"request {tag}"}]

    completion = llm.chat.completions.create(model="gpt-test", messages=messages("a"))
    seen["chat sync"] = completion.choices[0].message.content
    seen["chat sync stream"] = "".join(
        c.choices[0].delta.content or ""
        for c in llm.chat.completions.create(model="gpt-test", messages=messages("bb"), stream=True)
    )
    response = llm.responses.create(model="gpt-resp", input="request ccc")
    seen["responses sync"] = response.output_text
    seen["responses sync stream"] = "".join(
        e.delta
        for e in llm.responses.create(model="gpt-resp", input="request dddd", stream=True)
        if e.type == "response.output_text.delta"
    )

    async def run_async():
        c = await allm.chat.completions.create(model="gpt-test", messages=messages("eeeee"))
        seen["chat async"] = c.choices[0].message.content
        stream = await allm.chat.completions.create(
            model="gpt-test", messages=messages("ffffff"), stream=True
        )
        seen["chat async stream"] = "".join(
            [c.choices[0].delta.content or "" async for c in stream]
        )
        r = await allm.responses.create(model="gpt-resp", input="request ggggggg")
        seen["responses async"] = r.output_text
        rs = await allm.responses.create(model="gpt-resp", input="request hhhhhhhh", stream=True)
        seen["responses async stream"] = "".join(
            [e.delta async for e in rs if e.type == "response.output_text.delta"]
        )

    asyncio.run(run_async())
    assert ml.flush(timeout=10)
    assert errors == []
    assert set(seen.values()) == {"".join(WORDS)} and len(seen) == 8

    events = stored(live_org, name="llm.completion")
    assert len(events) == 8 == len(llm_server.usages)
    for event, usage in zip(events, llm_server.usages, strict=True):
        assert tokens(event) == expected(usage)
        assert event.metadata["_llm"] == {
            "vendor": "openai-compatible",
            "model": event.metadata["model"],
            "input_tokens": tokens(event)[0],
            "output_tokens": tokens(event)[1],
            "cached_input_tokens": tokens(event)[2],
            "total_tokens": tokens(event)[3],
        }
        assert event.metadata["strategy"] == "llm"
        assert event.external_customer_id == "u1"
    assert [e.metadata["model"] for e in events] == ["gpt-test", "gpt-test"] + ["gpt-resp"] * 2 + [
        "gpt-test",
        "gpt-test",
    ] + ["gpt-resp"] * 2
    # the proxy asked for usage on the streaming Chat Completions calls only
    chat_streams = [p for p in llm_server.payloads if p.get("stream") and "messages" in p]
    assert [p["stream_options"] for p in chat_streams] == [{"include_usage": True}] * 2


def test_stream_yields_exactly_the_chunks_of_the_unwrapped_client(ml, live_org, llm_server):
    raw, _ = clients(llm_server)
    llm = ml.llm(raw, customer="u1")
    request = {"model": "gpt-test", "messages": [{"role": "user", "content": "same"}]}
    plain = [c.model_dump() for c in raw.chat.completions.create(**request, stream=True)]
    with llm.chat.completions.create(**request, stream=True) as stream:
        metered = [c.model_dump() for c in stream]
    assert len(plain) == len(WORDS) + 1
    # the metered request carried include_usage, so its chunks have "usage": None explicitly
    assert [{**c, "usage": None} for c in metered] == [{**c, "usage": None} for c in plain]
    assert all(c["choices"] for c in metered)  # the usage-only chunk was not passed on
    # a caller that asks for usage itself gets the usage chunk, as without metering
    with_usage = {**request, "stream_options": {"include_usage": True}}
    plain_u = [c.model_dump() for c in raw.chat.completions.create(**with_usage, stream=True)]
    metered_u = [c.model_dump() for c in llm.chat.completions.create(**with_usage, stream=True)]
    assert metered_u == plain_u and metered_u[-1]["choices"] == []
    assert ml.flush(timeout=10)
    events = stored(live_org)
    assert len(events) == 2  # the two metered calls
    assert len(llm_server.usages) == 3  # the plain call without include_usage got none
    assert [tokens(e) for e in events] == [
        expected(llm_server.usages[0]),
        expected(llm_server.usages[2]),
    ]


def test_cost_callback_and_vendor(ml, live_org, llm_server):
    raw, _ = clients(llm_server)

    def cost(usage):  # $0.50 per million input, $1.50 per million output, in cents
        return Decimal(usage.input_tokens) * Decimal("0.00005") + Decimal(
            usage.output_tokens
        ) * Decimal("0.00015")

    llm = ml.llm(raw, customer="u2", name="chat", vendor="acme-llm", cost=cost)
    llm.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert ml.flush(timeout=10)
    (event,) = stored(live_org, name="chat")
    usage = llm_server.usages[0]
    amount = Decimal(usage["prompt_tokens"]) * Decimal("0.00005") + Decimal(
        usage["completion_tokens"]
    ) * Decimal("0.00015")
    assert Decimal(str(event.metadata["_cost"]["amount"])) == amount
    assert event.metadata["_cost"]["currency"] == "usd"
    assert event.metadata["vendor"] == event.metadata["_llm"]["vendor"] == "acme-llm"


def test_failed_call_propagates_unchanged_and_records_nothing(ml, live_org, llm_server):
    raw, async_raw = clients(llm_server)
    llm = ml.llm(raw, customer="u1")
    with pytest.raises(openai.NotFoundError) as info:
        llm.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        asyncio.run(ml.llm(async_raw, customer="u1").responses.create(model="missing", input="x"))
    # everything else is the client's own
    assert llm.base_url == raw.base_url and llm.api_key == "sk-test"
    assert ml.flush(timeout=10)
    assert stored(live_org) == []


def test_record_usage_openai_anthropic_and_dicts(ml, live_org, llm_server):
    raw, _ = clients(llm_server)
    completion = raw.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "plain"}]
    )
    ml.record_usage(completion, customer="u1", name="rec")
    anthropic_message = {  # Anthropic Messages API response shape
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {
            "input_tokens": 120,
            "output_tokens": 45,
            "cache_read_input_tokens": 300,
            "cache_creation_input_tokens": 20,
        },
    }
    ml.record_usage(anthropic_message, customer="u1", name="rec")
    ml.record_usage(
        {"input_tokens": 7, "output_tokens": 3}, customer="u1", name="rec", model="m", vendor="v"
    )
    assert ml.record_usage({"nothing": 1}, customer="u1", name="rec") is None
    assert ml.flush(timeout=10)
    openai_event, anthropic_event, bare = stored(live_org, name="rec")
    assert tokens(openai_event) == expected(llm_server.usages[0])
    assert openai_event.metadata["vendor"] == "openai"
    assert tokens(anthropic_event) == (440, 45, 300, 485)
    assert (anthropic_event.metadata["vendor"], anthropic_event.metadata["model"]) == (
        "anthropic",
        "claude-test",
    )
    assert tokens(bare) == (7, 3, 0, 10)
    assert (bare.metadata["model"], bare.metadata["vendor"]) == ("m", "v")


def test_record_usage_pydantic_ai_run_result(ml, live_org, llm_server):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=llm_server.url + "/v1", api_key="sk-test")
    agent = Agent(OpenAIChatModel("gpt-agent", provider=provider))
    result = agent.run_sync("What is metered?")
    assert result.output == "".join(WORDS)
    ml.record_usage(result, customer="u3", name="agent.run")
    assert ml.flush(timeout=10)
    (event,) = stored(live_org, name="agent.run")
    assert tokens(event) == expected(llm_server.usages[0])
    assert event.metadata["model"] == "gpt-agent"
    assert event.metadata["vendor"] == "openai"
