"""End-to-end: the official `openai` SDK against every translated provider, and the official
`anthropic` SDK against weir's `/v1/messages`, on a real `weir` in front of the real mock, which
plays each provider in its native protocol (Anthropic Messages, Gemini, Bedrock Converse with
SigV4 and event-stream, Azure OpenAI, Azure AI Foundry). Fixtures are in conftest.py.
"""

from __future__ import annotations

import math

import anthropic
import openai
import pytest

from conftest import AWS_SECRET_ACCESS_KEY, TRANSLATED

MESSAGES = [{"role": "user", "content": "Say hello to the gateway"}]
PROMPT_TOKENS = sum(3 + math.ceil(len(m["content"]) / 4) for m in MESSAGES)


def reply_text(words: int) -> str:
    return " ".join(f"mock{i}" for i in range(words))


def openai_client(weir, keys, path: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=weir.v1(path), api_key=keys.alice, max_retries=0, timeout=30)


def anthropic_client(weir, keys, path: str = "") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{weir.base_url}{path}", api_key=keys.alice, max_retries=0, timeout=30)


@pytest.mark.parametrize("path,kind", TRANSLATED)
def test_openai_sdk_chat_through_each_provider(weir, keys, path, kind):
    client = openai_client(weir, keys, path)
    raw = client.chat.completions.with_raw_response.create(model="mock-gpt", messages=MESSAGES, max_tokens=3)
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == reply_text(3)
    assert resp.usage.prompt_tokens == PROMPT_TOKENS
    assert resp.usage.completion_tokens == 3
    assert AWS_SECRET_ACCESS_KEY not in raw.http_response.text and keys.upstream not in raw.http_response.text
    request_id = raw.headers["x-request-id"]
    [record] = weir.wait_usage([request_id])[request_id]
    assert record["provider"] == path[1:]
    assert record["consumer"] == "alice"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (PROMPT_TOKENS, 3)
    assert record["cost_usd"] == pytest.approx((PROMPT_TOKENS * 1 + 3 * 4) / 1e6)


@pytest.mark.parametrize("path,kind", TRANSLATED)
def test_openai_sdk_streams_through_each_provider(weir, keys, path, kind):
    client = openai_client(weir, keys, path)
    stream = client.chat.completions.create(
        model="mock-gpt",
        messages=MESSAGES,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_text(5)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 5 and usage[0].prompt_tokens == PROMPT_TOKENS


@pytest.mark.parametrize("path,kind", TRANSLATED[:3])
def test_openai_sdk_sees_provider_errors_in_its_own_format(weir, keys, path, kind):
    client = openai_client(weir, keys, path)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="mock-fault:status-429", messages=MESSAGES, max_tokens=2)
    assert "rate limit" in str(err.value).lower()
    with pytest.raises(openai.APIError) as err:
        stream = client.chat.completions.create(
            model="mock-fault:cut-after-2", messages=MESSAGES, max_tokens=6, stream=True
        )
        list(stream)
    assert "upstream_stream" in str(err.value.body) or "broke off" in str(err.value)


@pytest.mark.parametrize("path", ["", "/gemini", "/bedrock"])
def test_anthropic_sdk_messages(weir, keys, path):
    client = anthropic_client(weir, keys, path)
    msg = client.messages.create(
        model="mock-gpt",
        max_tokens=4,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello to the gateway"}],
    )
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text == reply_text(4)
    assert msg.stop_reason in ("end_turn", "max_tokens")
    # System prompt (9 chars) and user message: (3 + 3) + PROMPT_TOKENS.
    assert msg.usage.input_tokens == 6 + PROMPT_TOKENS
    assert msg.usage.output_tokens == 4


@pytest.mark.parametrize("path", ["", "/anthropic", "/gemini"])
def test_anthropic_sdk_streams(weir, keys, path):
    client = anthropic_client(weir, keys, path)
    with client.messages.stream(
        model="mock-gpt",
        max_tokens=5,
        messages=[{"role": "user", "content": "Say hello to the gateway"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == reply_text(5)
    assert final.content[0].text == reply_text(5)
    assert final.usage.output_tokens == 5
    assert final.usage.input_tokens == PROMPT_TOKENS


def test_anthropic_sdk_errors(weir, keys):
    client = anthropic_client(weir, keys)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=weir.base_url, api_key="sk-wrong", max_retries=0).messages.create(
            model="mock-gpt", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="mock-gpt",
            max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "video", "url": "x"}]}],
        )
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].type" in err.value.body["error"]["message"]
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(
            model="mock-fault:status-429", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )


@pytest.mark.parametrize("path", ["/gemini", "/bedrock"])
def test_anthropic_sdk_tool_use_round_trip(weir, keys, path):
    """Anthropic tools in, the provider's native tool call, Anthropic tool_use out — and back."""
    client = anthropic_client(weir, keys, path)
    tools = [{"name": "weather", "description": "Weather of a city", "input_schema": {"type": "object"}}]
    question = {"role": "user", "content": "weather in Paris"}
    msg = client.messages.create(model="mock-gpt", max_tokens=3, tools=tools, messages=[question])
    assert msg.stop_reason == "tool_use"
    [call] = [b for b in msg.content if b.type == "tool_use"]
    assert call.name == "weather"
    assert call.input == {"input": "weather in Paris"}
    with client.messages.stream(model="mock-gpt", max_tokens=3, tools=tools, messages=[question]) as stream:
        final = stream.get_final_message()
    [streamed] = [b for b in final.content if b.type == "tool_use"]
    assert streamed.input == {"input": "weather in Paris"}
    answer = client.messages.create(
        model="mock-gpt",
        max_tokens=3,
        tools=tools,
        messages=[
            question,
            {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "21 °C"}]},
        ],
    )
    assert answer.content[0].text == reply_text(3)


@pytest.mark.parametrize("path", ["/anthropic", "/gemini", "/bedrock"])
def test_openai_sdk_tool_calls(weir, keys, path):
    client = openai_client(weir, keys, path)
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    resp = client.chat.completions.create(
        model="mock-gpt", max_tokens=3, tools=tools, messages=[{"role": "user", "content": "weather in Paris"}]
    )
    assert resp.choices[0].finish_reason == "tool_calls"
    [call] = resp.choices[0].message.tool_calls
    assert call.function.name == "weather"
    assert call.function.arguments and '"input"' in call.function.arguments
