"""LangChain (``langchain-core``, ``langchain-openai``) + OpenInference's LangChain instrumentation.

The scenario: a chain named ``research_agent`` retrieves documents, asks the model
(``ChatOpenAI`` against the fake server), runs the two tools the model requested in
parallel, and asks the model again. OpenInference sets every attribute when a LangChain
run ends, labels any run whose name contains "agent" as an ``AGENT`` span, and does not
make its spans current (so hints cannot be read inside LangChain callbacks).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conformance_helpers import Harness, group, llm, require, summarise, tool
from fake_openai_server import MODEL, SERVED_MODEL, FakeOpenAIServer, text, tools

require("langchain_core", "langchain_openai", "openinference.instrumentation.langchain")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from langchain_core.runnables.config import ContextThreadPoolExecutor  # noqa: E402
from langchain_core.tools import BaseTool  # noqa: E402
from langchain_core.tools import tool as as_tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from openinference.instrumentation.langchain import LangChainInstrumentor  # noqa: E402

AGENT = "research_agent"


@pytest.fixture
def instrumented(harness: Harness) -> Iterator[None]:
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=harness.provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


class CityRetriever(BaseRetriever):
    """Always finds the same two documents."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [Document(page_content="Paris is in France."), Document(page_content="UTC+1")]


def _tools(rendezvous: threading.Barrier) -> list[BaseTool]:
    @as_tool
    def get_weather(city: str = "Paris") -> str:
        """The weather in a city."""
        rendezvous.wait()  # both tools are running at once, so their spans overlap
        return "sunny"

    @as_tool
    def get_time(city: str = "Paris") -> str:
        """The local time in a city."""
        rendezvous.wait()
        return "noon"

    return [get_weather, get_time]


def _research_agent(server: FakeOpenAIServer) -> RunnableLambda[str, str]:
    model = ChatOpenAI(model=MODEL, base_url=server.base_url, api_key="test-key", max_retries=0)  # type: ignore[call-arg]
    agent_tools = _tools(threading.Barrier(2, timeout=5))
    by_name = {t.name: t for t in agent_tools}
    model_with_tools = model.bind_tools(agent_tools)
    retriever = CityRetriever()

    def research_agent(question: str) -> str:
        documents = retriever.invoke(question)
        messages: list[BaseMessage] = [
            HumanMessage(f"{question}\n\n" + "\n".join(d.page_content for d in documents))
        ]
        request = model_with_tools.invoke(messages)
        messages.append(request)
        calls = getattr(request, "tool_calls", [])
        # The executor LangChain itself uses for parallel branches: it carries the
        # context, so the tool runs are children of this one.
        with ContextThreadPoolExecutor(max_workers=len(calls)) as pool:
            results = list(pool.map(lambda call: by_name[call["name"]].invoke(call), calls))
        assert all(isinstance(m, ToolMessage) for m in results)
        messages.extend(results)
        return str(model_with_tools.invoke(messages).content)

    return RunnableLambda(research_agent, name=AGENT)


def test_chain_with_retriever_and_parallel_tools(
    harness: Harness, instrumented: None, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.script(
        tools("get_weather", "get_time", input_tokens=40, output_tokens=9),
        text("sunny at noon", input_tokens=60, output_tokens=4),
    )
    assert _research_agent(fake_openai).invoke("Weather and time in Paris?") == "sunny at noon"

    run = harness.only_run()
    # The chain is an AGENT span by OpenInference's name rule; nothing names the agent
    # explicitly, so the agent id is the span's name.
    assert run.agent_id == AGENT
    got = summarise(run)
    tool_path = (AGENT,)
    assert [got[0], got[3]] == [
        llm("ChatOpenAI", (AGENT,), output=9, prompt=40, model=SERVED_MODEL, tool_calls=2),
        llm("ChatOpenAI", (AGENT,), output=4, prompt=60, model=SERVED_MODEL, tool_calls=0),
    ]
    assert {got[1], got[2]} == {tool("get_weather", tool_path), tool("get_time", tool_path)}
    assert harness.groups(AGENT) == {group("get_weather", "get_time")}
    # The retriever is recognised but is neither an LLM nor a tool call.
    kinds = {s.name: (s.attributes or {}).get("openinference.span.kind") for s in harness.spans()}
    assert kinds["CityRetriever"] == "RETRIEVER"


def _pipeline_with_an_agent_labelled_step(server: FakeOpenAIServer) -> RunnableLambda[str, str]:
    """A plain pipeline (no agent) whose first step merely has "agent" in its name."""
    model = ChatOpenAI(model=MODEL, base_url=server.base_url, api_key="test-key", max_retries=0)  # type: ignore[call-arg]
    scratchpad = RunnableLambda(lambda q: f"{q} (no prior steps)", name="format_agent_scratchpad")

    def pipeline(question: str) -> str:
        prompt = scratchpad.invoke(question)
        return str(model.invoke(prompt).content)

    return RunnableLambda(pipeline, name="pipeline")


def _run_pipeline(harness: Harness, server: FakeOpenAIServer) -> Any:
    server.script(text("ok", input_tokens=8, output_tokens=2))
    _pipeline_with_an_agent_labelled_step(server).invoke("hi")
    return harness.runs()


def test_agent_label_on_a_step_is_recognised_as_openinference_reports_it(
    harness: Harness, instrumented: None, fake_openai: FakeOpenAIServer
) -> None:
    _run_pipeline(harness, fake_openai)
    kinds = {s.name: (s.attributes or {}).get("openinference.span.kind") for s in harness.spans()}
    assert kinds["format_agent_scratchpad"] == "AGENT"
    assert kinds["pipeline"] == "CHAIN"


def test_agent_labelled_step_does_not_swallow_the_pipeline(
    harness: Harness, instrumented: None, fake_openai: FakeOpenAIServer
) -> None:
    runs = _run_pipeline(harness, fake_openai)
    all_calls = [c for agent_runs in runs.values() for r in agent_runs for c in r.calls]
    assert [(c.kind, c.output_tokens, c.path) for c in all_calls] == [("llm", 2, ("pipeline",))]
