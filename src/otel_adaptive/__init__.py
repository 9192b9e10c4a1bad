"""otel-adaptive: an OpenTelemetry span processor that learns from agent runs.

Register :class:`AdaptiveSpanProcessor` on your ``TracerProvider``; read hints for
the next LLM call with :func:`current_hints` or write them into a request with
:func:`inject_hints`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_adaptive.config import AdaptiveConfig, ConfigError
    from otel_adaptive.hints import (
        AgentHints,
        current_hints,
        inject_hints,
        set_latency_sensitivity,
    )
    from otel_adaptive.processor import AdaptiveSpanProcessor
    from otel_adaptive.records import CallRecord, RunRecord

__version__ = "0.1.0"

# Names are imported on first use, so that importing the package (the command line's
# --version, the start-up check under opentelemetry-instrument) loads no SDK.
_EXPORTS = {
    "AdaptiveConfig": "otel_adaptive.config",
    "ConfigError": "otel_adaptive.config",
    "AgentHints": "otel_adaptive.hints",
    "current_hints": "otel_adaptive.hints",
    "inject_hints": "otel_adaptive.hints",
    "set_latency_sensitivity": "otel_adaptive.hints",
    "AdaptiveSpanProcessor": "otel_adaptive.processor",
    "CallRecord": "otel_adaptive.records",
    "RunRecord": "otel_adaptive.records",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'otel_adaptive' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AdaptiveConfig",
    "AdaptiveSpanProcessor",
    "AgentHints",
    "CallRecord",
    "ConfigError",
    "RunRecord",
    "__version__",
    "current_hints",
    "inject_hints",
    "set_latency_sensitivity",
]
