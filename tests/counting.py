"""How often a function really ran during a test (a merge, a prediction)."""

from __future__ import annotations

from typing import Any

import pytest


class Calls:
    """The number of calls made to a counted function since it was counted."""

    def __init__(self) -> None:
        self.count = 0


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Calls:
    """Replace ``owner.name`` with a wrapper that counts its calls (undone with the patch)."""
    real = getattr(owner, name)
    calls = Calls()

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.count += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls
