"""The learner contract: completed runs in, mergeable per-agent deltas out.

A learner never touches storage. For each batch of runs it returns, per agent,
a mapping of *field keys* to mergeable values. Stores merge those deltas into
the agent's learned state field by field (in Redis: only the touched fields, so
the cost of a batch does not grow with the size of what was learned), and the
learner turns a full set of fields back into its public view.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from otel_adaptive.records import RunRecord

if TYPE_CHECKING:
    from otel_adaptive.config import AdaptiveConfig

_M = TypeVar("_M", bound="Mergeable")


class Mergeable(Protocol):
    """A value that merges associatively with another of its kind."""

    def merge(self: _M, other: _M) -> _M:
        """Return a new value equal to learning both inputs; inputs are unchanged."""
        ...

    def to_bytes(self) -> bytes:
        """Serialise without loss (decoded by the owning learner's ``decode_field``)."""
        ...


#: One agent's learned fields for one learner: field key -> value.
Fields = Mapping[str, Mergeable]


class Learner(ABC):
    """Learns from completed runs; stateless between batches."""

    #: Name used in configuration (``learners=("trie", ...)``) and storage keys.
    name: ClassVar[str]

    @classmethod
    def options_from(cls, config: AdaptiveConfig) -> dict[str, Any]:
        """Constructor keyword arguments taken from the configuration; none by default."""
        return {}

    @abstractmethod
    def learn(self, runs: Sequence[RunRecord]) -> dict[str, dict[str, Mergeable]]:
        """Return ``{agent_id: {field_key: delta}}`` for a batch of runs."""

    @abstractmethod
    def decode_field(self, key: str, data: bytes) -> Mergeable:
        """Decode one stored field value; raises ``ValueError`` on bad data."""

    @abstractmethod
    def view(self, agent_id: str, fields: Fields) -> Any:
        """Build the immutable view the plan cache serves from a full field set."""

    def document(self, agent_id: str, fields: Fields) -> dict[str, Any] | None:
        """A JSON-safe document of the learned state for tools; None when there is none."""
        view = self.view(agent_id, fields)
        to_dict = getattr(view, "to_dict", None)
        return to_dict() if callable(to_dict) else None
