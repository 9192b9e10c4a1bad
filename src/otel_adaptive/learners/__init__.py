"""Learners turn completed runs into mergeable learned state.

Learners are selected by name in :class:`~otel_adaptive.AdaptiveConfig`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from otel_adaptive.config import AdaptiveConfig
from otel_adaptive.learners.base import Fields, Learner, Mergeable
from otel_adaptive.learners.parallelism import ToolParallelismLearner
from otel_adaptive.learners.trie import PredictionTrieLearner

#: Every learner the configuration can name.
LEARNER_TYPES: dict[str, type[Learner]] = {
    PredictionTrieLearner.name: PredictionTrieLearner,
    ToolParallelismLearner.name: ToolParallelismLearner,
}


def build_learners(
    names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Learner]:
    """Instantiate learners by name, in the given order.

    ``options`` maps a learner name to its constructor keyword arguments.
    Raises ``ValueError`` naming the unknown learner and the allowed names.
    """
    learners: dict[str, Learner] = {}
    for name in names:
        learner_type = LEARNER_TYPES.get(name)
        if learner_type is None:
            allowed = ", ".join(sorted(LEARNER_TYPES))
            raise ValueError(f"unknown learner {name!r}; allowed: {allowed}")
        learners[name] = learner_type(**(options or {}).get(name, {}))
    return learners


def learner_options(config: AdaptiveConfig) -> dict[str, dict[str, Any]]:
    """Constructor arguments of each learner, taken from the configuration."""
    return {
        PredictionTrieLearner.name: {
            "sensitivity": config.sensitivity,
            "parallel_weight": config.parallel_weight,
            "scale": config.sensitivity_scale,
        }
    }


__all__ = [
    "LEARNER_TYPES",
    "Fields",
    "Learner",
    "Mergeable",
    "PredictionTrieLearner",
    "ToolParallelismLearner",
    "build_learners",
    "learner_options",
]
