"""Bounded memos for per-name work on the exporter thread."""

from __future__ import annotations

from typing import TypeVar

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


def remember(
    memo: dict[_Key, _Value], key: _Key, value: _Value, *, small: bool, capacity: int
) -> None:
    """Keep ``value`` in a bounded memo: only small keys, and a full memo starts over.

    Starting over (rather than evicting one entry at a time) keeps the hit path a
    plain dict lookup; hostile input can make the memo useless, never large.
    """
    if not small:
        return
    if len(memo) >= capacity:
        memo.clear()
    memo[key] = value
