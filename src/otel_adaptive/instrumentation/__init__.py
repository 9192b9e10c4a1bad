"""Client integrations that put learned hints into LLM requests at call time."""

from otel_adaptive.instrumentation.openai import OpenAIInstrumentor

__all__ = ["OpenAIInstrumentor"]
