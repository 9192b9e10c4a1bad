"""Say loudly, once, when OpenTelemetry's auto-initialisation fails under us.

``opentelemetry-instrument`` runs our ``opentelemetry_post_instrument`` hook only
after the distro, the SDK configurator and every instrumentor were set up; when
one of them raises (most often: ``opentelemetry-distro`` defaults every exporter
to OTLP and ``opentelemetry-exporter-otlp`` is not installed), the hook never
runs and the application starts without otel-adaptive. This module is imported
at interpreter start-up by ``otel_adaptive.pth`` (only under
``opentelemetry-instrument`` with ``OTEL_ADAPTIVE_ENABLED`` set), before the
auto-initialisation, and watches its log for that failure. It imports nothing
heavy: it runs in every such process before the SDK is loaded.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping

from otel_adaptive.config import env_var_name, parse_bool

#: The logger opentelemetry-instrumentation reports the failure on.
AUTO_INSTRUMENTATION_LOGGER = "opentelemetry.instrumentation.auto_instrumentation"
_FAILURE_PREFIX = "Failed to auto initialize"
#: The variables that turn opentelemetry-distro's default OTLP exporters off.
EXPORTERS_OFF = "OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none"

_reported = threading.Event()


def failure_message(error: BaseException | None) -> str:
    """What went wrong and how to fix it, in one paragraph."""
    cause = f" ({type(error).__name__}: {error})" if error is not None else ""
    text = f"{error}"
    if "Requested component" in text and "not found" in text:
        fix = (
            "An exporter named in OTEL_*_EXPORTER is not installed (opentelemetry-distro "
            "picks 'otlp' for traces, metrics and logs when they are unset). Either set "
            f"{EXPORTERS_OFF} (or only the ones you do not use), or install the exporter: "
            "pip install opentelemetry-exporter-otlp."
        )
    else:
        fix = "Fix the error in the traceback above; `otel-adaptive doctor` runs the same check."
    return (
        f"otel-adaptive: ERROR: {env_var_name('enabled')} is set, but OpenTelemetry's "
        f"auto-initialisation failed{cause}, so otel-adaptive is NOT active: no runs are "
        f"learned and no hints are served. {fix}\n"
    )


class _FailureWatch(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if record.levelno >= logging.ERROR and str(record.msg).startswith(_FAILURE_PREFIX):
                report(record.exc_info[1] if record.exc_info else None)
        except Exception:  # a start-up check must never stop the application
            pass
        return True  # the original record is logged as usual


def report(error: BaseException | None) -> None:
    """Write :func:`failure_message` to standard error, the first time only."""
    if _reported.is_set():
        return
    _reported.set()
    sys.stderr.write(failure_message(error))
    sys.stderr.flush()


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    raw = environ.get(env_var_name("enabled"), "").strip()
    try:
        return bool(raw) and parse_bool(raw)
    except ValueError:
        return True  # an invalid value: the hook reports it, if it gets to run at all


def watch() -> None:
    """Start watching (does nothing unless ``OTEL_ADAPTIVE_ENABLED`` is true)."""
    if enabled():
        logging.getLogger(AUTO_INSTRUMENTATION_LOGGER).addFilter(_FailureWatch())
