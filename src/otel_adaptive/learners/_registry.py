"""The learners a configuration can name, imported only when first used.

The exporter, the plan cache and the stores work with :class:`Learner` alone;
which concrete learners exist is decided here and nowhere else. Each entry is a
``"module:Class"`` path, so importing the package (or the configuration, which
validates names against it) never imports a learner that is not used.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from otel_adaptive.learners.base import Learner

#: Built-in learners: configuration name -> ``"module:Class"``.
_BUILT_IN: dict[str, str] = {
    "trie": "otel_adaptive.learners.trie:PredictionTrieLearner",
    "tool_parallelism": "otel_adaptive.learners.parallelism:ToolParallelismLearner",
}


class _LearnerRegistry(Mapping[str, type[Learner]]):
    """A read-only mapping of learner name to class that imports each class on first use."""

    def __init__(self, paths: Mapping[str, str]) -> None:
        self._paths = dict(paths)
        self._loaded: dict[str, type[Learner]] = {}

    def __getitem__(self, name: str) -> type[Learner]:
        loaded = self._loaded.get(name)
        if loaded is None:
            loaded = self._import(name, self._paths[name])
            self._loaded[name] = loaded
        return loaded

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, name: object) -> bool:
        # Membership must not import anything.
        return name in self._paths

    @staticmethod
    def _import(name: str, path: str) -> type[Learner]:
        module_name, _, attribute = path.partition(":")
        learner_type = getattr(importlib.import_module(module_name), attribute)
        # A wrong table entry is a packaging bug: say which one instead of failing later.
        if not (isinstance(learner_type, type) and issubclass(learner_type, Learner)):
            raise TypeError(f"learner {name!r} ({path}) is not a Learner subclass")
        if learner_type.name != name:
            raise TypeError(f"learner {name!r} ({path}) calls itself {learner_type.name!r}")
        return learner_type


#: Every learner the configuration can name.
LEARNER_TYPES: Mapping[str, type[Learner]] = _LearnerRegistry(_BUILT_IN)

#: Their names, in the default order.
LEARNER_NAMES: tuple[str, ...] = tuple(_BUILT_IN)


def unknown_learner(name: str, configured: Mapping[str, Learner]) -> ValueError:
    """The error for a learner name neither configured nor known."""
    allowed = ", ".join(sorted({*configured, *LEARNER_TYPES}))
    return ValueError(f"unknown learner {name!r}; allowed: {allowed}")


def learner_for(name: str, configured: Mapping[str, Learner]) -> Learner:
    """The configured learner called ``name``, else a default instance of the known one.

    Stores use it to decode fields of learners the process did not configure
    (``otel-adaptive inspect`` of another process's state, say).
    """
    learner = configured.get(name)
    if learner is not None:
        return learner
    if name not in LEARNER_TYPES:
        raise unknown_learner(name, configured)
    return LEARNER_TYPES[name]()
