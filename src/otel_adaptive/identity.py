"""Run identity: which span roots a run and which agent the run belongs to.

One rule, used in two places that must agree: the assembler decides a run's
identity once its spans have ended (every attribute known), and hint lookups
decide it while the spans are still open (only what was set at start is
visible). Both call the functions below; where start-time attributes are not
enough to name the agent, the exporter publishes with each plan snapshot the
mapping from the run root's span name to the stored agent id
(:func:`alias_key`), and hint lookups read it from the plan cache.

The rule (``docs/semantic-conventions.md`` shows it on each framework's spans):

* the run root is the outermost *agent scope* of the local trace with calls
  beneath it, else (policy ``agent_or_root``) the local root. An agent scope is
  a span classified ``agent`` that is not a graph node: a span named like a
  graph framework's generic model node (``agent``) with no explicit agent name
  is one node of a graph, not an agent, so the graph around it is the run;
* the agent id is the run root's explicit name (``adaptive.agent.id``,
  ``gen_ai.agent.name``, ``agent.name``, ``graph.node.id``,
  ``traceloop.entity.name``), else the name its span name carries
  (``<name>.run``, ``<name>._execute_core``, ``invoke_agent <name>``...), else
  the name of the first agent beneath it (agent SDK bridges wrap each run in a
  workflow span named after the workflow), else its span name. A graph or
  workflow root names the agent after the graph or workflow (also when an
  application span wraps the graph: the run is then the application span's).
  Any other root: the configured fallback, else ``service.name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from otel_adaptive import conventions
from otel_adaptive.records import ScopeType

#: Span names graph frameworks give their generic model node (LangGraph's ReAct
#: ``agent`` node, labelled AGENT by OpenInference): a node, never an agent's name.
GENERIC_NODE_NAMES: Final = frozenset({"agent", "model", "call_model"})

#: Endings frameworks append to an agent's name in span names.
_NAME_SUFFIXES: Final = (
    "._execute_core",
    ".execute_task",
    ".run",
    ".workflow",
    ".agent",
    ".task",
)
#: Beginnings of GenAI span names that carry the agent's name after them.
_NAME_PREFIXES: Final = ("invoke_agent ", "create_agent ")

#: What names a run when nothing else does and no fallback is configured.
UNKNOWN_SERVICE: Final = "unknown_service"


def explicit_agent_name(attributes: Mapping[str, object] | None) -> str | None:
    """The agent name an attribute states (our override first), else None."""
    return conventions.agent_name(attributes) or conventions.graph_node_name(attributes)


def name_in_span_name(span_name: str) -> str | None:
    """The agent name a framework put into a span name (``weather.run`` -> ``weather``)."""
    for suffix in _NAME_SUFFIXES:
        if span_name.endswith(suffix) and len(span_name) > len(suffix):
            return span_name[: -len(suffix)]
    for prefix in _NAME_PREFIXES:
        if span_name.startswith(prefix) and len(span_name) > len(prefix):
            return span_name[len(prefix) :]
    return None


def is_graph_node(kind: ScopeType, span_name: str, attributes: Mapping[str, object] | None) -> bool:
    """An ``agent`` span that is a graph's generic node, not an agent of its own."""
    return (
        kind == "agent"
        and span_name in GENERIC_NODE_NAMES
        and conventions.agent_name(attributes) is None
    )


def is_agent_scope(
    kind: ScopeType, span_name: str, attributes: Mapping[str, object] | None
) -> bool:
    """Whether the span is an agent for run identity (may root a run, may name one)."""
    return kind == "agent" and not is_graph_node(kind, span_name, attributes)


def agent_name_of(span_name: str, attributes: Mapping[str, object] | None) -> str:
    """An agent span's name: explicit, else from its span name, else the span name."""
    return explicit_agent_name(attributes) or name_in_span_name(span_name) or span_name


def run_agent_id(
    root_kind: ScopeType,
    root_name: str,
    root_attributes: Mapping[str, object] | None,
    *,
    first_inner_agent: tuple[str, Mapping[str, object] | None] | None,
    graph_name: str | None,
    fallback: str,
) -> str:
    """The agent id of a run (the rule in the module docstring).

    ``first_inner_agent`` is (span name, attributes) of the earliest agent
    scope beneath the root; ``graph_name`` the span name of the graph that holds
    the first graph node beneath the root (the root itself, or a graph invoked
    inside an application span).
    """
    if is_agent_scope(root_kind, root_name, root_attributes):
        named = explicit_agent_name(root_attributes) or name_in_span_name(root_name)
        if named:
            return named
        if first_inner_agent is not None:
            return agent_name_of(*first_inner_agent)
        return root_name
    workflow = conventions.workflow_name(root_attributes)
    if workflow:
        return workflow
    if graph_name is not None:
        return name_in_span_name(graph_name) or graph_name
    return fallback


def fallback_agent_id(configured: str | None, service_name: object) -> str:
    """The agent id of runs whose root names no agent: configured, else ``service.name``."""
    if configured:
        return configured
    return service_name if isinstance(service_name, str) and service_name else UNKNOWN_SERVICE


def alias_key(root_start_name: str) -> str:
    """What a hint lookup can always see of a run root: its span name at start."""
    return root_start_name


__all__ = [
    "GENERIC_NODE_NAMES",
    "UNKNOWN_SERVICE",
    "agent_name_of",
    "alias_key",
    "explicit_agent_name",
    "fallback_agent_id",
    "is_agent_scope",
    "is_graph_node",
    "name_in_span_name",
    "run_agent_id",
]
