"""``AdaptiveConfig``: every setting in one place, from code or ``OTEL_ADAPTIVE_*``.

Values are validated when the config is built, so a bad setting fails at
start-up with a message naming the setting (or environment variable), the value
and what is allowed, rather than somewhere inside the exporter thread.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from otel_adaptive import profiles
from otel_adaptive.learners import LEARNER_NAMES
from otel_adaptive.redaction import mask_url, redact_text

RunRootPolicy = Literal["agent_or_root", "agent"]
BadDataPolicy = Literal["ignore", "replace"]
HintProfile = Literal["dynamo", "nat", "custom"]

_RUN_ROOT_POLICIES: tuple[str, ...] = ("agent_or_root", "agent")
_BAD_DATA_POLICIES: tuple[str, ...] = ("ignore", "replace")
_KNOWN_LEARNERS: tuple[str, ...] = LEARNER_NAMES


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and why."""


@dataclass(frozen=True)
class AdaptiveConfig:
    """Settings of an :class:`~otel_adaptive.AdaptiveSpanProcessor`.

    Every field has an ``OTEL_ADAPTIVE_<FIELD_NAME_UPPER>`` environment variable,
    read by :meth:`from_env`; ``docs/configuration.md`` lists them all.
    """

    enabled: bool = True
    """Master switch; a disabled processor ignores every span."""
    agent_id: str | None = None
    """Agent id for runs whose root is not an agent span (else ``service.name``)."""
    run_root: RunRootPolicy = "agent_or_root"
    """``agent_or_root``: a trace with no agent span is one run; ``agent``: only agent spans
    start runs."""
    name_heuristics: bool = True
    """Classify spans by name when no known attribute says what they are."""
    learners: tuple[str, ...] = _KNOWN_LEARNERS
    """Learners to run on completed runs, by name."""

    max_queue_size: int = 8192
    """Span events (a span is a start and an end) buffered for the exporter; more are
    dropped and counted."""
    max_export_batch_size: int = 512
    """Events the exporter takes per batch; reaching it wakes the exporter early."""
    schedule_delay_millis: int = 1000
    """Longest wait between two exporter batches."""
    shutdown_timeout_millis: int = 30000
    """How long ``shutdown()`` may spend flushing before it gives up (and reports what was lost)."""
    learn_interval_millis: int = 1000
    """Completed runs are learned and written together once per interval: each learned
    field is merged and each agent's delta written once per interval (hints lag by up to
    this long; ``force_flush`` learns at once)."""
    max_agents: int = 1000
    """Agents learned per process (and kept by the in-memory store); beyond it idle agents
    make room, else new agents are not learned (``agents_over_limit``)."""

    run_timeout_seconds: float = 300.0
    """Open runs with no activity for this long are evicted (and counted)."""
    max_open_traces: int = 4096
    """Local traces assembled at once; the least recently active is evicted beyond this."""
    run_grace_seconds: float = 5.0
    """How long a run whose root ended waits for calls still open beneath it (a stream
    read after its parent ended) before it is stored without them (0: never waits)."""
    max_calls_per_run: int = 1024
    """Calls kept per run; later calls are dropped and counted as truncated."""
    max_spans_per_trace: int = 16384
    """Spans tracked per local trace; beyond this the trace is evicted."""
    max_name_length: int = 256
    """Span, tool, model and agent names are cut to this many characters."""

    max_runs_per_agent: int = 1000
    """Runs retained per agent in the store (oldest go first)."""
    run_max_age_seconds: float | None = None
    """Runs older than this are dropped from the store (None keeps them until the count bound)."""

    sensitivity: bool = True
    """Learn latency sensitivity from the shape of each run."""
    parallel_weight: float = 0.0
    """Weight of the parallel-step signal in the sensitivity score."""
    sensitivity_scale: int = 5
    """Latency sensitivity is reported on 1..scale."""

    hint_profile: HintProfile = "dynamo"
    """What hints look like on the wire: ``dynamo`` (``priority`` and ``osl``, for Dynamo
    >= 1.3), ``nat`` (NeMo Agent Toolkit's six fields, for Dynamo <= 1.2) or ``custom``
    (the fields of ``OTEL_ADAPTIVE_HINT_FIELDS``). See docs/hints.md."""
    hint_fields: str | None = None
    """``custom`` profile only: the fields to send, comma-separated, each optionally
    ``:name`` to send it under another name (e.g. ``priority,osl:expected_tokens``;
    unset: all six under their own names)."""
    hint_body_path: str | None = "nvext.agent_hints"
    """Dotted path of the hint object in a request body, for every profile (none: not
    into the body)."""
    hint_header: str | None = None
    """Header that also carries the hint object as JSON (None: no header)."""
    hint_session_header: str | None = "x-dynamo-session-id"
    """Header carrying the run's session id, ``{agent_id}-{trace_id}`` (none: not sent)."""
    hint_parent_session_header: str | None = "x-dynamo-parent-session-id"
    """Header carrying the parent session id of a run started by a remote caller,
    ``{trace_id}-{remote_parent_span_id}`` (none: not sent)."""
    instrument_openai: bool = False
    """Under ``opentelemetry-instrument``: also instrument the ``openai`` client so every
    chat-completions and responses request carries the hints."""

    redis_url: str | None = None
    """``redis://``, ``rediss://`` or ``unix://`` URL; None keeps everything in process."""
    redis_cluster: bool = False
    """Connect with the Redis Cluster client."""
    key_prefix: str = "otel_adaptive:"
    """Prefix of every Redis key written."""
    redis_socket_timeout_seconds: float = 1.0
    """Timeout of one Redis command; the exporter retries later on expiry."""
    redis_connect_timeout_seconds: float = 1.0
    """Timeout of opening a Redis connection."""
    redis_ssl_ca_certs: str | None = None
    """CA bundle to verify a ``rediss://`` server."""
    redis_ssl_certfile: str | None = None
    """Client certificate for ``rediss://`` mutual TLS."""
    redis_ssl_keyfile: str | None = None
    """Client key for ``rediss://`` mutual TLS."""
    refresh_interval_seconds: float = 5.0
    """How often learned state is re-read from the store, so that what other processes
    learned reaches this process's hints."""
    retry_buffer_runs: int = 10000
    """Completed runs held while the store is unreachable; the oldest are dropped beyond it."""
    on_bad_data: BadDataPolicy = "ignore"
    """What to do with stored data that cannot be decoded: ``ignore`` (skip it) or
    ``replace`` (overwrite it on the next write)."""

    def __post_init__(self) -> None:
        for spec in _SPECS:
            spec.check(getattr(self, spec.name), spec.name)
        if self.max_export_batch_size > self.max_queue_size:
            raise ConfigError(
                f"max_export_batch_size ({env_var_name('max_export_batch_size')}) = "
                f"{self.max_export_batch_size} must not exceed max_queue_size "
                f"({env_var_name('max_queue_size')}) = {self.max_queue_size}"
            )
        if self.hint_fields is not None and self.hint_profile != "custom":
            raise ConfigError(
                f"hint_fields ({env_var_name('hint_fields')}) = {self.hint_fields!r} needs "
                f"hint_profile ({env_var_name('hint_profile')}) = 'custom', not "
                f"{self.hint_profile!r}"
            )

    def __repr__(self) -> str:
        # Written by hand: the generated repr would show redis_url with its password.
        shown = ", ".join(f"{f.name}={_shown(f.name, getattr(self, f.name))}" for f in fields(self))
        return f"{type(self).__name__}({shown})"

    def replace(self, **changes: Any) -> AdaptiveConfig:
        """A copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AdaptiveConfig:
        """Build a config from ``OTEL_ADAPTIVE_*`` variables; keyword arguments win over them."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in _SPECS:
            raw = env.get(spec.env_var)
            if raw is None or raw.strip() == "":
                continue
            values[spec.name] = spec.parse_env(raw)
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigError:
            raise
        except TypeError as exc:  # an unknown keyword argument
            raise ConfigError(str(exc)) from None


def _shown(field_name: str, value: object) -> str:
    """How a setting's value may appear in a repr or an error: passwords masked."""
    if not isinstance(value, str):
        shown = repr(value)
    elif field_name == "redis_url":
        shown = repr(mask_url(value))
    else:
        shown = repr(redact_text(value))
    # A pasted blob or a 400-digit number must not flood a log line.
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 3] + "..."


def env_var_name(field_name: str) -> str:
    """The environment variable that sets a config field."""
    return "OTEL_ADAPTIVE_" + field_name.upper()


# --- validation and parsing, one spec per field -------------------------------------------


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str  # "bool", "int", "float", "str", "choice", "list"
    optional: bool
    minimum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def maximum(self) -> float | None:
        # Far beyond any sensible setting, and small enough that every use (a
        # timedelta, a sleep, a C-sized length) takes it without OverflowError.
        return {"int": _MAX_INT, "float": _MAX_FLOAT}.get(self.kind)

    @property
    def env_var(self) -> str:
        return env_var_name(self.name)

    def allowed(self) -> str:
        base = {
            "bool": "true or false",
            "int": "an integer",
            "float": "a number",
            "str": "a non-empty string",
            "url": "a redis://, rediss:// or unix:// URL",
            "prefix": "a non-empty string without { or }",
            "choice": "one of " + ", ".join(self.choices),
            "list": "a comma-separated list of " + ", ".join(self.choices),
            "fields": "a comma-separated list of field[:name] with fields from "
            + ", ".join(profiles.FIELDS),
            "path": "a dotted path of keys without spaces",
            "header": "an HTTP header name",
        }[self.kind]
        if self.minimum is not None:
            base += f" >= {self.minimum:g}"
        if self.optional:
            base += " (or none)"
        return base

    def fail(self, value: object, where: str, parsed: object = None) -> ConfigError:
        allowed = self.allowed()
        if self._too_big(value if parsed is None else parsed):
            allowed += f" and <= {self.maximum:.10g}"
        return ConfigError(f"invalid {where}={_shown(self.name, value)}: expected {allowed}")

    def _too_big(self, value: object) -> bool:
        if self.maximum is None or isinstance(value, bool):
            return False
        return isinstance(value, (int, float)) and value > self.maximum

    def check(self, value: object, where: str) -> None:
        if value is None:
            if self.optional:
                return
            raise self.fail(value, where)
        ok = _CHECKS[self.kind](value, self)
        # Compared without float(): a huge int must fail here, not overflow.
        if ok and self.minimum is not None:
            ok = value >= self.minimum  # type: ignore[operator]
        if ok and self.maximum is not None:
            ok = value <= self.maximum  # type: ignore[operator]
        if not ok:
            raise self.fail(value, where)

    def parse_env(self, raw: str) -> Any:
        text = raw.strip()
        if self.optional and text.lower() == "none":
            return None  # lets a variable turn off a setting whose default is on
        try:
            value = _PARSERS[self.kind](text)
        except ValueError:
            raise self.fail(raw, self.env_var) from None
        try:
            self.check(value, self.env_var)
        except ConfigError:
            raise self.fail(raw, self.env_var, value) from None
        return value


def _is_bool(value: object, _: _Spec) -> bool:
    return isinstance(value, bool)


def _is_int(value: object, _: _Spec) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: object, _: _Spec) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # NaN compares unequal to itself; infinities and huge ints fail the range check.
    return value == value  # noqa: PLR0124


_MAX_INT = 2**31 - 1
_MAX_SHOWN = 200
_MAX_FLOAT = 1e9  # seconds (about 31 years) or a weight


def _is_str(value: object, _: _Spec) -> bool:
    return isinstance(value, str) and value != ""


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _is_redis_url(value: object, _: _Spec) -> bool:
    return isinstance(value, str) and value.lower().startswith(_REDIS_SCHEMES)


def _is_key_prefix(value: object, _: _Spec) -> bool:
    # Braces would break the {agent} hash tag that keeps an agent's keys in one slot.
    return isinstance(value, str) and value != "" and "{" not in value and "}" not in value


def _is_choice(value: object, spec: _Spec) -> bool:
    return value in spec.choices


def _is_list(value: object, spec: _Spec) -> bool:
    return (
        isinstance(value, tuple)
        and len(set(value)) == len(value)
        and all(v in spec.choices for v in value)
    )


def _is_field_list(value: object, _: _Spec) -> bool:
    if not isinstance(value, str):
        return False
    try:
        profiles.parse_field_list(value)
    except ValueError:
        return False
    return True


def _is_body_path(value: object, _: _Spec) -> bool:
    return profiles.is_body_path(value)


def _is_header_name(value: object, _: _Spec) -> bool:
    return profiles.is_header_name(value)


_CHECKS: dict[str, Callable[[object, _Spec], bool]] = {
    "bool": _is_bool,
    "int": _is_int,
    "float": _is_float,
    "str": _is_str,
    "url": _is_redis_url,
    "prefix": _is_key_prefix,
    "choice": _is_choice,
    "list": _is_list,
    "fields": _is_field_list,
    "path": _is_body_path,
    "header": _is_header_name,
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


#: How every boolean variable is read (``ValueError`` for anything else).
parse_bool = _parse_bool


def _parse_list(text: str) -> tuple[str, ...]:
    if text.lower() == "none":
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_float(text: str) -> float:
    return float(text)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": _parse_bool,
    "int": int,
    "float": _parse_float,
    "str": str,
    "url": str,
    "prefix": str,
    "choice": str,
    "list": _parse_list,
    "fields": str,
    "path": str,
    "header": str,
}


def _build_specs() -> tuple[_Spec, ...]:
    kinds: dict[str, tuple[str, float | None, tuple[str, ...]]] = {
        "enabled": ("bool", None, ()),
        "agent_id": ("str", None, ()),
        "run_root": ("choice", None, _RUN_ROOT_POLICIES),
        "name_heuristics": ("bool", None, ()),
        "learners": ("list", None, _KNOWN_LEARNERS),
        "max_queue_size": ("int", 2, ()),
        "max_export_batch_size": ("int", 1, ()),
        "schedule_delay_millis": ("int", 1, ()),
        "shutdown_timeout_millis": ("int", 0, ()),
        "learn_interval_millis": ("int", 1, ()),
        "max_agents": ("int", 1, ()),
        "run_timeout_seconds": ("float", 0.001, ()),
        "max_open_traces": ("int", 1, ()),
        "run_grace_seconds": ("float", 0, ()),
        "max_calls_per_run": ("int", 1, ()),
        "max_spans_per_trace": ("int", 1, ()),
        "max_name_length": ("int", 8, ()),
        "max_runs_per_agent": ("int", 1, ()),
        "run_max_age_seconds": ("float", 0.001, ()),
        "sensitivity": ("bool", None, ()),
        "parallel_weight": ("float", 0, ()),
        "sensitivity_scale": ("int", 2, ()),
        "hint_profile": ("choice", None, profiles.PROFILES),
        "hint_fields": ("fields", None, ()),
        "hint_body_path": ("path", None, ()),
        "hint_header": ("header", None, ()),
        "hint_session_header": ("header", None, ()),
        "hint_parent_session_header": ("header", None, ()),
        "instrument_openai": ("bool", None, ()),
        "redis_url": ("url", None, ()),
        "redis_cluster": ("bool", None, ()),
        "key_prefix": ("prefix", None, ()),
        "redis_socket_timeout_seconds": ("float", 0.001, ()),
        "redis_connect_timeout_seconds": ("float", 0.001, ()),
        "redis_ssl_ca_certs": ("str", None, ()),
        "redis_ssl_certfile": ("str", None, ()),
        "redis_ssl_keyfile": ("str", None, ()),
        "refresh_interval_seconds": ("float", 0.01, ()),
        "retry_buffer_runs": ("int", 0, ()),
        "on_bad_data": ("choice", None, _BAD_DATA_POLICIES),
    }
    specs = []
    for f in fields(AdaptiveConfig):
        kind, minimum, choices = kinds[f.name]
        optional = "None" in str(f.type)  # the annotation admits None
        specs.append(_Spec(f.name, kind, optional, minimum, choices))
    return tuple(specs)


_SPECS: tuple[_Spec, ...] = _build_specs()


def documented_settings() -> list[tuple[str, str, str, str]]:
    """(environment variable, type, default, meaning) for every setting, in field order."""
    rows = []
    docs = _field_docs()
    for spec in _SPECS:
        f = next(f for f in fields(AdaptiveConfig) if f.name == spec.name)
        default = f.default
        if isinstance(default, tuple):
            shown = ",".join(default)
        elif isinstance(default, bool):
            shown = str(default).lower()
        elif default is None:
            shown = "unset"
        else:
            shown = str(default)
        rows.append((spec.env_var, spec.allowed(), shown, docs.get(spec.name, "")))
    return rows


def _field_docs() -> dict[str, str]:
    """Field docstrings (the string literal under each field) from the source."""
    tree = ast.parse(inspect.getsource(AdaptiveConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs
