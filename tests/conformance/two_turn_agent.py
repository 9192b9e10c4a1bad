"""The two-turn agent every framework test drives, and what its hints must say.

Turn 1: the model asks for two tools (run in parallel where the framework allows);
turn 2: it answers. Each turn reports its own token usage, so a hint read right before
a model request can be checked against the tokens *that* call produces. Only the
standard library and the project are imported here: the framework-specific modules
and the CrewAI venv share it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from otel_adaptive import AgentHints

QUESTION = "Weather and time in Paris?"
ANSWER = "sunny at noon"
TOOL_NAMES = ("get_weather", "get_time")
TOOL_RESULTS = {"get_weather": "sunny", "get_time": "noon"}

#: Runs learned before the served run whose hints are checked.
LEARNING_RUNS = 4


@dataclass(frozen=True)
class Turn:
    """What the scripted model answers in one turn, with the usage it reports."""

    input_tokens: int
    output_tokens: int
    tool_calls: tuple[str, ...] = ()


TOOLS_TURN = Turn(input_tokens=20, output_tokens=7, tool_calls=TOOL_NAMES)
ANSWER_TURN = Turn(input_tokens=30, output_tokens=3)
TURNS = (TOOLS_TURN, ANSWER_TURN)


class ThreadRendezvous:
    """Lets each tool finish only once both have started, so their spans overlap."""

    def __init__(self, parties: int = len(TOOL_NAMES)) -> None:
        self._barrier = threading.Barrier(parties, timeout=5)

    def wait(self) -> None:
        # Bounded: a framework that runs the tools one after the other fails the
        # test with BrokenBarrierError instead of hanging it.
        self._barrier.wait()


class AsyncRendezvous:
    """The same for tools that are coroutines on one event loop."""

    def __init__(self, parties: int = len(TOOL_NAMES)) -> None:
        self._parties = parties
        self._arrived = 0
        self._all_here: asyncio.Event | None = None

    async def wait(self) -> None:
        if self._all_here is None:
            self._all_here = asyncio.Event()
        self._arrived += 1
        if self._arrived == self._parties:
            self._all_here.set()
        await asyncio.wait_for(self._all_here.wait(), timeout=5)


def served(hints: Sequence[AgentHints | None]) -> list[tuple[int, int] | None]:
    """``(osl, total_requests)`` of each hint read before a model request."""
    return [None if h is None else (h.osl, h.total_requests) for h in hints]


def expected_served(turns: Sequence[Turn] = TURNS) -> list[tuple[int, int]]:
    """What a deterministic run must be served: each call's own output tokens, and
    the run's LLM call count as ``total_requests`` at every call."""
    return [(turn.output_tokens, len(turns)) for turn in turns]
