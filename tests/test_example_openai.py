"""examples/openai_client_hints.py: hints reach a (fake) OpenAI-compatible server."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("openai", reason="the example needs the examples extra (openai)")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "openai_client_hints.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openai_client_hints_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fake_server_receives_agent_hints_once_something_was_learned(
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests = _load_example().main(["--runs", "4"])
    assert len(requests) == 8  # a plan and an answer per run
    first_run, later_runs = requests[:2], requests[2:]
    for body, session_id in first_run:
        assert body["nvext"] == {"greed_sampling": False}  # sent as the application wrote it
        assert session_id is None
    for body, session_id in later_runs:
        assert set(body["nvext"]) == {"greed_sampling", "agent_hints"}
        assert set(body["nvext"]["agent_hints"]) == {"priority", "osl"}
        assert session_id is not None and session_id.startswith("support-bot-")
    # One session id per run: the plan and the answer of a run share it.
    sessions = [session_id for _, session_id in later_runs]
    assert sessions[0] == sessions[1] != sessions[2] == sessions[3]
    # The fake server answers with half of max_tokens: 32 for plans, 256 for answers.
    plans = [body for body, _ in later_runs if body["max_tokens"] == 64]
    answers = [body for body, _ in later_runs if body["max_tokens"] == 512]
    assert {body["nvext"]["agent_hints"]["osl"] for body in plans} == {32}
    assert {body["nvext"]["agent_hints"]["osl"] for body in answers} == {256}
    assert "request 8" in capsys.readouterr().out
