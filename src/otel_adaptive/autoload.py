"""Zero-code activation under ``opentelemetry-instrument``.

``opentelemetry-instrument`` calls every installed ``opentelemetry_post_instrument``
entry point once the SDK and the instrumentors are set up. Ours adds an
:class:`AdaptiveSpanProcessor` configured from ``OTEL_ADAPTIVE_*`` to the global
SDK tracer provider, but only when ``OTEL_ADAPTIVE_ENABLED`` is explicitly true:
the hook runs for every application in an environment where this package is
installed. It never raises: a problem is logged and the application starts anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_adaptive.config import AdaptiveConfig, ConfigError, env_var_name
from otel_adaptive.processor import AdaptiveSpanProcessor
from otel_adaptive.redaction import Redactor, mask_url

_logger = logging.getLogger(__name__)

ENABLED_VARIABLE = env_var_name("enabled")

_lock = threading.Lock()
_installed: AdaptiveSpanProcessor | None = None


def post_instrument() -> None:
    """The ``opentelemetry_post_instrument`` entry point (called with no arguments)."""
    install()


def install(
    environ: Mapping[str, str] | None = None, provider: object | None = None
) -> AdaptiveSpanProcessor | None:
    """Add a processor configured from ``environ`` to ``provider``; returns it.

    ``environ`` defaults to ``os.environ`` and ``provider`` to the global tracer
    provider. Returns None (and changes nothing) when ``OTEL_ADAPTIVE_ENABLED``
    is unset or false, when the configuration is invalid, or when the provider
    is not the SDK's. A second call returns the processor of the first.
    """
    global _installed  # noqa: PLW0603 - one processor per process, created once
    env = os.environ if environ is None else environ
    raw = env.get(ENABLED_VARIABLE, "").strip()
    if not raw:
        return None
    try:
        with _lock:
            if _installed is not None:
                return _installed
            config = AdaptiveConfig.from_env(env)
            if not config.enabled:
                return None
            target = trace.get_tracer_provider() if provider is None else provider
            if not isinstance(target, TracerProvider):
                _logger.warning(
                    "otel-adaptive: %s is set, but the tracer provider is %s, not the "
                    "OpenTelemetry SDK's TracerProvider, so no processor was added. Install "
                    "opentelemetry-distro (or configure an SDK TracerProvider) or add "
                    "AdaptiveSpanProcessor to your provider in code.",
                    ENABLED_VARIABLE,
                    type(target).__name__,
                )
                return None
            processor = AdaptiveSpanProcessor(config)
            target.add_span_processor(processor)
            _installed = processor
            _logger.info("otel-adaptive: processor added (%s)", _store_kind(config))
            if config.instrument_openai:
                from otel_adaptive.instrumentation.openai import OpenAIInstrumentor

                OpenAIInstrumentor().instrument()
            return processor
    except ConfigError as exc:
        # The message names the variable, the value and what is allowed; no traceback needed.
        _logger.error(
            "otel-adaptive is not active: %s. Fix the variable or unset %s.",
            _redactor(env)(str(exc)),
            ENABLED_VARIABLE,
        )
    except Exception as exc:  # the application must start whatever happens here
        # The traceback is formatted here, not by logging, so it can be redacted:
        # an exception's message may quote a configured URL.
        _logger.error(
            "otel-adaptive is not active: setting up the processor failed\n%s",
            _redactor(env)("".join(traceback.format_exception(exc))).rstrip(),
        )
    return None


def installed() -> AdaptiveSpanProcessor | None:
    """The processor added by :func:`install`, if any."""
    return _installed


def _store_kind(config: AdaptiveConfig) -> str:
    if config.redis_url is None:
        return "in-memory store"
    return f"Redis store at {mask_url(config.redis_url)}"


def _redactor(env: Mapping[str, str]) -> Redactor:
    return Redactor.for_urls(env.get(env_var_name("redis_url")))
