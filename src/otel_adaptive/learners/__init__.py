"""Learners turn completed runs into mergeable learned state.

Learners are selected by name in :class:`~otel_adaptive.AdaptiveConfig`.
"""

from __future__ import annotations

from collections.abc import Iterable

from otel_adaptive.learners.base import Fields, Learner, Mergeable
from otel_adaptive.learners.parallelism import ToolParallelismLearner
from otel_adaptive.learners.trie import PredictionTrieLearner

#: Every learner the configuration can name.
LEARNER_TYPES: dict[str, type[Learner]] = {
    PredictionTrieLearner.name: PredictionTrieLearner,
    ToolParallelismLearner.name: ToolParallelismLearner,
}


def build_learners(names: Iterable[str]) -> dict[str, Learner]:
    """Instantiate learners by name, in the given order.

    Raises ``ValueError`` naming the unknown learner and the allowed names.
    """
    learners: dict[str, Learner] = {}
    for name in names:
        learner_type = LEARNER_TYPES.get(name)
        if learner_type is None:
            allowed = ", ".join(sorted(LEARNER_TYPES))
            raise ValueError(f"unknown learner {name!r}; allowed: {allowed}")
        learners[name] = learner_type()
    return learners


__all__ = [
    "LEARNER_TYPES",
    "Fields",
    "Learner",
    "Mergeable",
    "PredictionTrieLearner",
    "ToolParallelismLearner",
    "build_learners",
]
