"""otel-adaptive: an OpenTelemetry span processor that learns from agent runs.

Register :class:`AdaptiveSpanProcessor` on your ``TracerProvider``; read hints for
the next LLM call with :func:`current_hints` or write them into a request with
:func:`inject_hints`.
"""

from otel_adaptive.config import AdaptiveConfig, ConfigError
from otel_adaptive.hints import AgentHints, current_hints, inject_hints, set_latency_sensitivity
from otel_adaptive.processor import AdaptiveSpanProcessor
from otel_adaptive.records import CallRecord, RunRecord

__version__ = "0.1.0"

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
