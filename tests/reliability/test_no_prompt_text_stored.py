"""Prompts and completions never reach Redis: every stored byte is searched for a marker."""

from __future__ import annotations

import json
import uuid

import redis
from reliability_helpers import stored_bytes, stored_members

from spans import LLM, TOOL, agent_attrs, make_processor, timed_span, usage

SECRET = f"SECRET-{uuid.uuid4().hex}"
#: Appears in an agent name, which is stored by design: proves the search finds things.
CONTROL = f"control-{uuid.uuid4().hex[:12]}"


def _genai_messages(role: str, with_tool_call: bool) -> str:
    parts: list[dict[str, object]] = [{"type": "text", "content": f"{role} says {SECRET}"}]
    if with_tool_call:
        parts.append(
            {"type": "tool_call", "id": SECRET, "name": "lookup", "arguments": {"q": SECRET}}
        )
    return json.dumps([{"role": role, "parts": parts, "finish_reason": "tool_calls"}])


#: Every convention's prompt and completion attributes, each carrying the secret.
CONTENT_ATTRIBUTES: dict[str, str] = {
    # OpenTelemetry GenAI (current), parsed by the processor to count tool calls.
    "gen_ai.input.messages": _genai_messages("user", with_tool_call=False),
    "gen_ai.output.messages": _genai_messages("assistant", with_tool_call=True),
    "gen_ai.system_instructions": json.dumps([{"type": "text", "content": SECRET}]),
    # OpenInference, flattened; tool-call keys are read to count the requested tools.
    "llm.input_messages.0.message.role": "user",
    "llm.input_messages.0.message.content": SECRET,
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.content": SECRET,
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "lookup",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": SECRET,
    "input.value": SECRET,
    "output.value": SECRET,
    # OpenLLMetry / older GenAI, flattened.
    "gen_ai.prompt.0.role": "user",
    "gen_ai.prompt.0.content": SECRET,
    "gen_ai.completion.0.role": "assistant",
    "gen_ai.completion.0.content": SECRET,
    "gen_ai.completion.0.tool_calls.0.arguments": SECRET,
}


def _run_with_secrets(tracer: object, agent: str) -> None:
    with timed_span(tracer, "invoke_agent", 0, 100, agent_attrs(agent)) as root:  # type: ignore[arg-type]
        root.add_event("gen_ai.user.message", {"content": SECRET})
        for k in range(2):
            with timed_span(
                tracer,  # type: ignore[arg-type]
                "chat m",
                k * 40,
                k * 40 + 10,
                {**LLM, **CONTENT_ATTRIBUTES},
                end_attributes=usage(9),
            ) as llm:
                llm.add_event("gen_ai.content.prompt", {"gen_ai.prompt": SECRET})
                llm.add_event("gen_ai.content.completion", {"gen_ai.completion": SECRET})
                llm.add_event("gen_ai.choice", {"message": json.dumps({"content": SECRET})})
            for tool in range(2):  # two overlapping tools: a parallel group is learned too
                with timed_span(
                    tracer,  # type: ignore[arg-type]
                    "execute_tool lookup",
                    k * 40 + 12 + tool,
                    k * 40 + 30,
                    {
                        **TOOL,
                        "gen_ai.tool.name": f"lookup{tool}",
                        "gen_ai.tool.call.arguments": SECRET,
                        "gen_ai.tool.call.result": SECRET,
                        "input.value": SECRET,
                        "output.value": SECRET,
                    },
                ) as call:
                    call.add_event("tool.output", {"content": SECRET})


def test_prompt_and_completion_text_never_reaches_redis(redis_url: str, key_prefix: str) -> None:
    provider, processor, tracer = make_processor(redis_url=redis_url, key_prefix=key_prefix)
    for _ in range(3):
        _run_with_secrets(tracer, CONTROL)
    assert processor.force_flush(10_000)
    assert processor.store.run_count(CONTROL) == 3
    [run] = processor.store.list_runs(CONTROL, limit=1)
    assert [c.tool_call_count for c in run.calls if c.kind == "llm"] == [1, 1]  # content was read
    provider.shutdown()

    secret, control = SECRET.encode(), CONTROL.encode()
    with redis.Redis.from_url(redis_url) as client:
        dumped = stored_bytes(client, key_prefix)
        members = stored_members(client, key_prefix)
    assert len(dumped) >= 7  # the registry, and the agent's meta, runs, index, batches, state
    keys = b"".join(dumped)
    values = b"".join(dumped.values())
    read_back = b"".join(members)
    # The search works: the agent name, stored by design, is found in keys and values.
    assert control in keys and control in read_back
    # Not one byte of any prompt, completion, tool argument or event reached Redis.
    assert secret not in keys
    assert secret not in values
    assert secret not in read_back
