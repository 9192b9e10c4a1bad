"""The learner registry: concrete learners are imported only when named, by one rule."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from otel_adaptive import AdaptiveConfig
from otel_adaptive.config import ConfigError
from otel_adaptive.learners import (
    LEARNER_NAMES,
    LEARNER_TYPES,
    Learner,
    build_learners,
    learner_for,
    learner_options,
)
from otel_adaptive.learners._registry import _LearnerRegistry
from otel_adaptive.learners.trie import PredictionTrieLearner
from otel_adaptive.records import CallRecord, RunRecord
from otel_adaptive.store.base import AgentDelta
from otel_adaptive.store.memory import MemoryStore

_CONCRETE = ("otel_adaptive.learners.trie", "otel_adaptive.learners.parallelism")


def _modules_after(code: str) -> list[str]:
    """Concrete learner modules imported by ``code`` in a fresh interpreter."""
    probe = (
        "import sys, json\n"
        f"{code}\n"
        f"print(json.dumps([m for m in {list(_CONCRETE)!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_pipeline_modules_import_no_concrete_learner() -> None:
    imported = _modules_after(
        "import otel_adaptive, otel_adaptive.exporter, otel_adaptive.cache,"
        " otel_adaptive.store.base, otel_adaptive.store.memory, otel_adaptive.store.redis,"
        " otel_adaptive._learned_state, otel_adaptive.config, otel_adaptive.learners"
    )
    assert imported == []


def test_a_processor_imports_only_the_learners_it_is_configured_with() -> None:
    imported = _modules_after(
        "from otel_adaptive import AdaptiveConfig, AdaptiveSpanProcessor\n"
        "p = AdaptiveSpanProcessor(AdaptiveConfig(learners=('tool_parallelism',)))\n"
        "p.shutdown()"
    )
    assert imported == ["otel_adaptive.learners.parallelism"]


def test_membership_and_names_do_not_import() -> None:
    registry = _LearnerRegistry({"ghost": "otel_adaptive_no_such_module:Nothing"})
    assert "ghost" in registry
    assert list(registry) == ["ghost"]
    assert len(registry) == 1
    with pytest.raises(ModuleNotFoundError):
        registry["ghost"]


def test_registry_resolves_the_built_in_classes() -> None:
    assert LEARNER_NAMES == ("trie", "tool_parallelism")
    assert list(LEARNER_TYPES) == list(LEARNER_NAMES)
    assert LEARNER_TYPES["trie"] is PredictionTrieLearner
    for name in LEARNER_NAMES:
        assert issubclass(LEARNER_TYPES[name], Learner)
        assert LEARNER_TYPES[name].name == name


def test_package_level_class_names_still_resolve() -> None:
    import otel_adaptive.learners as learners

    assert learners.PredictionTrieLearner is PredictionTrieLearner
    assert learners.ToolParallelismLearner is LEARNER_TYPES["tool_parallelism"]
    with pytest.raises(AttributeError):
        learners.NoSuchLearner


def test_a_wrong_table_entry_is_reported_with_its_path() -> None:
    not_a_learner = _LearnerRegistry({"x": "otel_adaptive.records:CallRecord"})
    with pytest.raises(TypeError, match=r"'x' \(otel_adaptive.records:CallRecord\)"):
        not_a_learner["x"]
    misnamed = _LearnerRegistry({"x": "otel_adaptive.learners.trie:PredictionTrieLearner"})
    with pytest.raises(TypeError, match="calls itself 'trie'"):
        misnamed["x"]


def test_unknown_names_are_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown learner 'nope'; allowed: tool_parallelism, trie"):
        build_learners(["nope"])
    with pytest.raises(ValueError, match="unknown learner 'nope'"):
        learner_for("nope", {})
    with pytest.raises(ValueError, match="unknown learner 'nope'"):
        MemoryStore(learners={}).load_view("agent", "nope")


def test_configuration_validates_names_against_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_ADAPTIVE_LEARNERS", "trie,nope")
    with pytest.raises(ConfigError, match="OTEL_ADAPTIVE_LEARNERS"):
        AdaptiveConfig.from_env()
    monkeypatch.setenv("OTEL_ADAPTIVE_LEARNERS", "tool_parallelism")
    assert AdaptiveConfig.from_env().learners == ("tool_parallelism",)


def test_options_come_from_each_learner() -> None:
    config = AdaptiveConfig(sensitivity=False, parallel_weight=0.5, sensitivity_scale=7)
    options = learner_options(config)
    assert options == {
        "trie": {"sensitivity": False, "parallel_weight": 0.5, "scale": 7},
        "tool_parallelism": {},
    }
    trie = build_learners(["trie"], options)["trie"]
    assert isinstance(trie, PredictionTrieLearner)
    assert learner_options(AdaptiveConfig(learners=("tool_parallelism",))) == {
        "tool_parallelism": {}
    }


def test_a_store_decodes_a_learner_it_was_not_configured_with() -> None:
    learner = build_learners(["trie"])["trie"]
    run = RunRecord(
        id="r1",
        agent_id="agent",
        trace_id="t1",
        start_ns=0,
        end_ns=10,
        calls=(
            CallRecord(
                kind="llm", name="m", span_id="s1", parent_span_id=None,
                path=("agent",), start_ns=1, end_ns=5, output_tokens=3,
            ),
        ),
    )
    store = MemoryStore(learners={})
    deltas = [
        AgentDelta(agent_id=agent, learner="trie", fields=fields)
        for agent, fields in learner.learn([run]).items()
    ]
    assert store.merge("batch-1", deltas)
    assert store.load_trie("agent") is not None
    assert learner_for("trie", store.learners) is not learner  # a fresh default instance


def test_records_are_not_tracked_by_the_garbage_collector() -> None:
    call = CallRecord(
        kind="tool", name="t", span_id="s", parent_span_id=None, path=("a",), start_ns=0, end_ns=1
    )
    run = RunRecord(id="r", agent_id="a", trace_id="t", start_ns=0, end_ns=1, calls=(call,))
    assert not gc.is_tracked(call)
    assert not gc.is_tracked(run)
