"""Learners turn completed runs into mergeable learned state.

Learners are selected by name in :class:`~otel_adaptive.AdaptiveConfig`. The
package itself imports no concrete learner: the registry imports one the first
time it is asked for, so what runs is exactly what the configuration names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from otel_adaptive.learners._registry import (
    LEARNER_NAMES,
    LEARNER_TYPES,
    learner_for,
    unknown_learner,
)
from otel_adaptive.learners.base import Fields, Learner, Mergeable

if TYPE_CHECKING:
    from otel_adaptive.config import AdaptiveConfig
    from otel_adaptive.learners.parallelism import ToolParallelismLearner
    from otel_adaptive.learners.trie import PredictionTrieLearner

# Public names of the built-in learner classes, resolved on first access.
_LAZY_CLASSES = {
    "PredictionTrieLearner": "trie",
    "ToolParallelismLearner": "tool_parallelism",
}


def __getattr__(attribute: str) -> Any:
    name = _LAZY_CLASSES.get(attribute)
    if name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
    return LEARNER_TYPES[name]


def build_learners(
    names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Learner]:
    """Instantiate learners by name, in the given order.

    ``options`` maps a learner name to its constructor keyword arguments.
    Raises ``ValueError`` naming the unknown learner and the allowed names.
    """
    learners: dict[str, Learner] = {}
    for name in names:
        if name not in LEARNER_TYPES:
            raise unknown_learner(name, {})
        learners[name] = LEARNER_TYPES[name](**(options or {}).get(name, {}))
    return learners


def learner_options(config: AdaptiveConfig) -> dict[str, dict[str, Any]]:
    """Constructor arguments of each configured learner, taken from the configuration."""
    return {
        name: LEARNER_TYPES[name].options_from(config)
        for name in config.learners
        if name in LEARNER_TYPES
    }


__all__ = [
    "LEARNER_NAMES",
    "LEARNER_TYPES",
    "Fields",
    "Learner",
    "Mergeable",
    "PredictionTrieLearner",
    "ToolParallelismLearner",
    "build_learners",
    "learner_for",
    "learner_options",
]
