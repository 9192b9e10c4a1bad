"""Hint profiles: what a prediction looks like on the wire for one kind of consumer.

A profile is a small declarative mapping: which hint values go into the request
body (under which names, with which types) and which headers carry the run's
session identity. Consumers disagree: NVIDIA Dynamo >= 1.3 rejects any field of
``nvext.agent_hints`` it does not know (HTTP 400) and wants integers where it
parses ``i32``/``u32``; NeMo Agent Toolkit and Dynamo <= 1.2 take six fields.

Injection never clobbers the caller: every key the request already has, at any
depth of the body path and in the headers (compared case-insensitively), is kept.
A body path that runs into a value that is not an object leaves the request
untouched. ``docs/hints.md`` is the field reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from otel_adaptive.config import AdaptiveConfig
    from otel_adaptive.hints import AgentHints

PROFILES: tuple[str, ...] = ("dynamo", "nat", "custom")

_Value = Callable[["AgentHints"], Any]
_json = msgspec.json.Encoder()


def _osl(hints: AgentHints) -> int | None:
    # Below one token nothing useful was learned; Dynamo reads osl as a u32 load estimate.
    return hints.osl if hints.osl >= 1 else None


#: The hint values a ``custom`` profile may pick, by name, with the type each is sent as.
FIELDS: dict[str, _Value] = {
    "priority": lambda h: h.priority,
    "osl": _osl,
    "iat": lambda h: h.iat,
    "latency_sensitivity": lambda h: h.latency_sensitivity,
    "prefix_id": lambda h: h.prefix_id,
    "total_requests": lambda h: h.total_requests,
}

# NeMo Agent Toolkit's object: its priority is the sensitivity itself (higher = more urgent)
# and latency_sensitivity is a float.
_NAT_FIELDS: tuple[tuple[str, _Value], ...] = (
    ("osl", lambda h: h.osl),
    ("iat", lambda h: h.iat),
    ("priority", lambda h: h.latency_sensitivity),
    ("latency_sensitivity", lambda h: float(h.latency_sensitivity)),
    ("prefix_id", lambda h: h.prefix_id),
    ("total_requests", lambda h: h.total_requests),
)

_DYNAMO_FIELDS: tuple[tuple[str, _Value], ...] = (("priority", FIELDS["priority"]), ("osl", _osl))

_BODY_PATH = re.compile(r"[^.\s]+(\.[^.\s]+)*")
# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_WIRE_NAME = re.compile(r"[A-Za-z0-9_\-]+")


def is_body_path(text: object) -> bool:
    """A dotted path of non-empty keys without spaces (``nvext.agent_hints``)."""
    return isinstance(text, str) and _BODY_PATH.fullmatch(text) is not None


def is_header_name(text: object) -> bool:
    return isinstance(text, str) and _HEADER_NAME.fullmatch(text) is not None


def parse_field_list(text: str) -> tuple[tuple[str, str], ...]:
    """``"priority,osl:expected_tokens"`` -> ``(("priority", "priority"), ("osl", ...))``.

    Each entry is a field name, optionally ``:`` and the name it is sent under.
    Raises ValueError naming the offending entry.
    """
    entries: list[tuple[str, str]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        field, _, wire = (part.strip() for part in entry.partition(":"))
        wire = wire or field
        if field not in FIELDS:
            raise ValueError(f"unknown hint field {field!r} (known: {', '.join(FIELDS)})")
        if _WIRE_NAME.fullmatch(wire) is None:
            raise ValueError(f"bad name {wire!r} for hint field {field!r}")
        entries.append((field, wire))
    if not entries:
        raise ValueError("no hint field named")
    wires = [wire for _, wire in entries]
    if len(set(wires)) != len(wires):
        raise ValueError("two hint fields are sent under the same name")
    return tuple(entries)


@dataclass(frozen=True, slots=True)
class WireHints:
    """One request's hints as they go on the wire."""

    body_path: tuple[str, ...] | None
    """Keys from the top of the body down to the hint object (None: not in the body)."""
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Profile:
    """Which values go where, built once from the config."""

    name: str
    fields: tuple[tuple[str, _Value], ...]
    body_path: tuple[str, ...] | None
    session_header: str | None
    parent_session_header: str | None
    json_header: str | None

    def render(self, hints: AgentHints) -> WireHints:
        body: dict[str, Any] = {}
        for wire, value in self.fields:
            got = value(hints)
            if got is not None:
                body[wire] = got
        headers: dict[str, str] = {}
        if self.session_header and hints.session_id:
            headers[self.session_header] = hints.session_id
        if self.parent_session_header and hints.parent_session_id:
            headers[self.parent_session_header] = hints.parent_session_id
        if self.json_header:
            headers[self.json_header] = _json.encode(body).decode()
        return WireHints(self.body_path, body, headers)


def build_profile(config: AdaptiveConfig) -> Profile:
    """The profile the config selects (the config has validated every value)."""
    if config.hint_profile == "dynamo":
        fields = _DYNAMO_FIELDS
    elif config.hint_profile == "nat":
        fields = _NAT_FIELDS
    else:
        chosen = parse_field_list(config.hint_fields) if config.hint_fields else None
        pairs = chosen or tuple((name, name) for name in FIELDS)
        fields = tuple((wire, FIELDS[field]) for field, wire in pairs)
    path = config.hint_body_path
    return Profile(
        name=config.hint_profile,
        fields=fields,
        body_path=tuple(path.split(".")) if path else None,
        session_header=config.hint_session_header,
        parent_session_header=config.hint_parent_session_header,
        json_header=config.hint_header,
    )


# --- merging: the caller's keys always win ---------------------------------------------------


class Collision(Exception):
    """The body path runs into a value that is not an object."""

    def __init__(self, path: tuple[str, ...], key: str) -> None:
        super().__init__(f"cannot put hints at {'.'.join(path)!r}: {key!r} is not an object")


def merged_body(
    body: Mapping[str, Any] | None, path: tuple[str, ...], hints: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of ``body`` with ``hints`` merged in at ``path``; ``body`` is not changed.

    Only the objects along the path are copied. Raises :class:`Collision` when a
    key on the path holds something other than an object.
    """
    top: dict[str, Any] = dict(body) if body is not None else {}
    target = top
    for key in path:
        child = target.get(key)
        if child is None:
            child = {}
        elif type(child) is dict or isinstance(child, Mapping):  # dict first: the cheap check
            child = dict(child)
        else:
            raise Collision(path, key)
        target[key] = child
        target = child
    _fill(target, hints)
    return top


def merge_body_in_place(
    body: MutableMapping[str, Any], path: tuple[str, ...], hints: Mapping[str, Any]
) -> None:
    """Merge ``hints`` into ``body`` at ``path`` in place; on :class:`Collision` nothing changed."""
    target: MutableMapping[str, Any] = body
    depth = 0
    while depth < len(path):
        child = target.get(path[depth])
        if child is None:
            break
        if not isinstance(child, MutableMapping):
            raise Collision(path, path[depth])
        target = child
        depth += 1
    # From here down nothing exists yet: building it cannot collide.
    for key in path[depth:]:
        child = {}
        target[key] = child
        target = child
    _fill(target, hints)


def _fill(target: MutableMapping[str, Any], hints: Mapping[str, Any]) -> None:
    # A key set to None counts as not set, at the leaves as on the path to them.
    for key, value in hints.items():
        if target.get(key) is None:
            target[key] = value


def missing_headers(
    headers: Mapping[str, Any] | None, *others: Mapping[str, Any] | None
) -> Callable[[str], bool]:
    """A test for "no header of this name is set yet" across the given header maps."""
    present = {str(name).lower() for source in (headers, *others) if source for name in source}
    return lambda name: name.lower() not in present
