"""Helpers shared by the commands: consoles, store options, config loading, tables."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from otel_adaptive.config import AdaptiveConfig, ConfigError
from otel_adaptive.learners import build_learners, learner_options
from otel_adaptive.learners.parallelism import ExecutionPlan
from otel_adaptive.redaction import redact_text
from otel_adaptive.store.base import Store, StoreUnavailableError
from otel_adaptive.store.factory import create_store

#: Exit status of a command that did its job, and of one that did not.
OK = 0
FAILED = 1


class CommandError(Exception):
    """A command cannot go on; the message says why (printed without a traceback)."""


def stdout_console() -> Console:
    # Created per command so output goes to whatever sys.stdout is at that moment.
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def fail(message: str) -> int:
    """Print ``message`` (any URL password masked) as an error; returns the failure status."""
    console = stderr_console()
    console.print("[bold red]error:[/] ", markup=True, end="")
    console.print(redact_text(message), markup=False)
    return FAILED


def print_json(document: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


def add_store_options(parser: argparse.ArgumentParser, redis_help: str) -> None:
    parser.add_argument("--redis-url", metavar="URL", help=redis_help)
    parser.add_argument(
        "--key-prefix",
        metavar="PREFIX",
        help="prefix of every Redis key (default: OTEL_ADAPTIVE_KEY_PREFIX, else otel_adaptive:)",
    )


def store_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields set by ``--redis-url``/``--key-prefix`` when given."""
    overrides: dict[str, Any] = {}
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    if getattr(args, "key_prefix", None):
        overrides["key_prefix"] = args.key_prefix
    return overrides


def load_config(**overrides: Any) -> AdaptiveConfig | str:
    """The config from ``OTEL_ADAPTIVE_*`` with ``overrides``, or the error message."""
    try:
        return AdaptiveConfig.from_env(**overrides)
    except ConfigError as exc:
        return str(exc)


def open_store(config: AdaptiveConfig) -> Store:
    """The store ``config`` points at (connections are made on first use)."""
    try:
        return create_store(config, build_learners(config.learners, learner_options(config)))
    except ValueError as exc:
        raise CommandError(f"invalid store settings: {exc}") from None


def check_reachable(store: Store) -> None:
    """Fail now, with a clear message, when the store cannot be used."""
    try:
        store.agents()
    except StoreUnavailableError as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:  # redis-py parses the URL on first use
        raise CommandError(f"invalid Redis URL: {exc}") from None


def describe_store(store: Store) -> dict[str, object]:
    """Where a store points, passwords masked (the in-memory store has nothing to show)."""
    describe = getattr(store, "describe", None)
    if callable(describe):
        described = describe()
        if isinstance(described, dict):
            return dict(described)
    return {"kind": type(store).__name__}


def store_label(store: Store) -> str:
    info = describe_store(store)
    url = info.get("url")
    if url is None:
        return "in-memory store (this process only)"
    cluster = " (cluster)" if info.get("cluster") else ""
    return f"Redis at {url}{cluster}, key prefix {info.get('key_prefix')!r}"


# --- the trie as rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrieRow:
    """One prediction of the trie: a node and a call index (None: any index)."""

    path: tuple[str, ...]
    call_index: int | None
    prediction: Mapping[str, Any]
    is_leaf: bool


def trie_rows(envelope: Mapping[str, Any] | None) -> Iterator[TrieRow]:
    """Every prediction of a trie in its wire format, depth first, children by name."""
    if envelope is None:
        return
    stack: list[tuple[Mapping[str, Any], tuple[str, ...]]] = [(envelope["root"], ())]
    while stack:
        node, path = stack.pop()
        children: Mapping[str, Any] = node["children"]
        leaf = not children
        by_index: Mapping[str, Any] = node["predictions_by_call_index"]
        for index in sorted(by_index, key=int):
            yield TrieRow(path, int(index), by_index[index], leaf)
        if node["predictions_any_index"] is not None:
            yield TrieRow(path, None, node["predictions_any_index"], leaf)
        for name in sorted(children, reverse=True):
            stack.append((children[name], (*path, name)))


def path_label(path: tuple[str, ...]) -> str:
    """The last name indented by depth (the root shows as ``(root)``)."""
    if not path:
        return "(root)"
    return "  " * len(path) + path[-1]


def trie_table(envelope: Mapping[str, Any] | None, title: str) -> Table:
    # Short headers, explained in the caption, so the table fits 80 columns; names do not
    # wrap (non-breaking spaces) and a long one is cut with an ellipsis (--json has it whole).
    table = Table(title=title, title_justify="left", caption=_TRIE_CAPTION, caption_justify="left")
    table.add_column("path", overflow="ellipsis", min_width=12, ratio=1)
    for header in ("call", "n", "p50", "p90", "left", "iat ms", "sens"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in trie_rows(envelope):
        prediction = row.prediction
        tokens = prediction["output_tokens"]
        level = prediction["latency_sensitivity"]
        table.add_row(
            _unbroken(path_label(row.path)),
            "any" if row.call_index is None else str(row.call_index),
            str(prediction["remaining_calls"]["sample_count"]),
            f"{tokens['p50']:.0f}",
            f"{tokens['p90']:.0f}",
            f"{prediction['remaining_calls']['mean']:.2f}",
            _interarrival(prediction["interarrival_ms"]),
            "-" if level is None else str(level),
        )
    return table


def _unbroken(label: str) -> str:
    """The label with the spaces inside its name made non-breaking (the indent stays)."""
    name = label.lstrip(" ")
    return label[: len(label) - len(name)] + name.replace(" ", "\u00a0")


_TRIE_CAPTION = (
    "n: samples; p50/p90: output tokens; left: mean LLM calls still to come; "
    "iat ms: mean time to the next call; sens: latency sensitivity"
)


def _interarrival(metric: Mapping[str, Any]) -> str:
    if not metric["sample_count"]:
        return "-"  # only ever the last call of its runs: nothing follows it
    return f"{metric['mean']:.1f}"


def plan_table(plan: ExecutionPlan, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("group", no_wrap=True, overflow="ellipsis")
    table.add_column("tools run together", overflow="fold")
    table.add_column("support", justify="right", no_wrap=True)
    for group in plan.groups:
        table.add_row(
            group.group_id,
            ", ".join(group.tool_names),
            f"{group.support}/{group.runs_observed} runs ({group.support_ratio:.0%})",
        )
    return table
