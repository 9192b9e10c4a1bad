"""Zero-code activation: the ``opentelemetry_post_instrument`` hook."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import NoOpTracerProvider

from otel_adaptive import AdaptiveSpanProcessor, autoload
from otel_adaptive.learners import LEARNER_TYPES, build_learners
from otel_adaptive.store.redis import RedisStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def _fresh_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(autoload, "_installed", None)
    yield
    installed = autoload.installed()
    if installed is not None:
        installed.shutdown()


def _processors(provider: TracerProvider) -> tuple[SpanProcessor, ...]:
    # The SDK offers no public way to list a provider's processors.
    processors: tuple[SpanProcessor, ...] = provider._active_span_processor._span_processors
    return processors


def _provider() -> TracerProvider:
    return TracerProvider(resource=Resource.create({"service.name": "autoload-test"}))


@pytest.mark.parametrize("value", [None, "", "false", "0", "off"])
def test_the_hook_does_nothing_unless_enabled_is_true(value: str | None) -> None:
    provider = _provider()
    env = {} if value is None else {"OTEL_ADAPTIVE_ENABLED": value}
    assert autoload.install(env, provider) is None
    assert _processors(provider) == ()
    assert autoload.installed() is None


def test_when_enabled_the_processor_is_added_once_and_learns_from_the_providers_spans() -> None:
    provider = _provider()
    env = {"OTEL_ADAPTIVE_ENABLED": "true", "OTEL_ADAPTIVE_AGENT_ID": "hooked"}
    processor = autoload.install(env, provider)
    assert isinstance(processor, AdaptiveSpanProcessor)
    assert autoload.install(env, provider) is processor  # a second call adds nothing
    assert _processors(provider) == (processor,)
    assert processor.config.agent_id == "hooked"
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("job"):
        with tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat"}):
            pass
    assert processor.force_flush()
    assert processor.store.run_count("hooked") == 1


def test_a_provider_that_is_not_the_sdks_gets_a_clear_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_adaptive.autoload"):
        assert autoload.install({"OTEL_ADAPTIVE_ENABLED": "true"}, NoOpTracerProvider()) is None
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "OTEL_ADAPTIVE_ENABLED" in record.getMessage()
    assert "NoOpTracerProvider" in record.getMessage()
    assert "not the OpenTelemetry SDK's TracerProvider" in record.getMessage()


def test_an_invalid_setting_is_logged_and_the_application_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = _provider()
    env = {"OTEL_ADAPTIVE_ENABLED": "true", "OTEL_ADAPTIVE_MAX_QUEUE_SIZE": "lots"}
    with caplog.at_level(logging.ERROR, logger="otel_adaptive.autoload"):
        assert autoload.install(env, provider) is None
    [record] = caplog.records
    message = record.getMessage()
    assert "OTEL_ADAPTIVE_MAX_QUEUE_SIZE='lots'" in message and "an integer >= 2" in message
    assert record.exc_info is None  # the message says it all
    assert _processors(provider) == ()


def test_an_invalid_enabled_value_is_reported_too(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="otel_adaptive.autoload"):
        assert autoload.install({"OTEL_ADAPTIVE_ENABLED": "sure"}, _provider()) is None
    assert "OTEL_ADAPTIVE_ENABLED='sure'" in caplog.text


def test_any_failure_while_setting_up_is_logged_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenProvider(TracerProvider):
        def add_span_processor(self, span_processor: Any) -> None:
            span_processor.shutdown()
            raise RuntimeError("provider refused")

    with caplog.at_level(logging.ERROR, logger="otel_adaptive.autoload"):
        assert autoload.install({"OTEL_ADAPTIVE_ENABLED": "yes"}, BrokenProvider()) is None
    assert "otel-adaptive is not active" in caplog.text and "provider refused" in caplog.text


def test_the_entry_point_is_registered_and_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [hook] = [
        ep
        for ep in entry_points(group="opentelemetry_post_instrument")
        if ep.name == "otel_adaptive"
    ]
    assert hook.load() is autoload.post_instrument
    monkeypatch.delenv("OTEL_ADAPTIVE_ENABLED", raising=False)
    hook.load()()  # called with no arguments, as opentelemetry-instrument does
    assert autoload.installed() is None


# --- under opentelemetry-instrument, in a real process ---------------------------------------


def _instrumented(env_changes: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    if not launcher.exists():
        pytest.skip("opentelemetry-instrument is not installed (pip install opentelemetry-distro)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        # Other instrumentors installed in the environment only slow the start-up down;
        # this switch leaves post-instrument hooks (ours) alone.
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="*",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        **env_changes,
    )
    return subprocess.run(
        [str(launcher), sys.executable, str(EXAMPLES / "plain_agent.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_opentelemetry_instrument_stores_runs_in_redis_without_code_changes(
    redis_url: str, key_prefix: str
) -> None:
    result = _instrumented(
        {
            "OTEL_ADAPTIVE_ENABLED": "true",
            "OTEL_ADAPTIVE_REDIS_URL": redis_url,
            "OTEL_ADAPTIVE_KEY_PREFIX": key_prefix,
        },
        "--runs",
        "3",
    )
    assert result.returncode == 0, result.stderr
    learners = build_learners(LEARNER_TYPES)
    store = RedisStore.from_url(redis_url, key_prefix=key_prefix, learners=learners)
    try:
        assert store.run_count("trip-planner") == 3
        [run] = store.list_runs("trip-planner", limit=1)
        assert [c.kind for c in run.calls] == ["llm", "tool", "tool", "llm"]
        plan = store.load_plan("trip-planner")
        assert [g.tool_names for g in plan.groups] == [("find_flights", "find_hotels")]
    finally:
        store.close()


def test_under_opentelemetry_instrument_a_bad_setting_is_reported_and_the_app_runs() -> None:
    result = _instrumented(
        {"OTEL_ADAPTIVE_ENABLED": "true", "OTEL_ADAPTIVE_RUN_ROOT": "sometimes"}, "--runs", "1"
    )
    assert result.returncode == 0
    assert "ran 1 runs" in result.stdout
    assert "OTEL_ADAPTIVE_RUN_ROOT='sometimes'" in result.stderr


# --- a failed auto-initialisation (our hook never runs then) ---------------------------------


def test_a_failed_auto_initialisation_is_reported_once_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from otel_adaptive import _startup

    monkeypatch.setenv("OTEL_ADAPTIVE_ENABLED", "true")
    monkeypatch.setattr(_startup, "_reported", type(_startup._reported)())
    logger = logging.getLogger(_startup.AUTO_INSTRUMENTATION_LOGGER)
    before = list(logger.filters)
    try:
        _startup.watch()
        for _ in range(2):
            try:
                raise RuntimeError(
                    "Requested component 'otlp_proto_grpc' not found in entry point "
                    "'opentelemetry_traces_exporter'"
                )
            except RuntimeError:
                logger.exception("Failed to auto initialize OpenTelemetry")
    finally:
        logger.filters[:] = before
    err = capsys.readouterr().err
    assert err.count("otel-adaptive is NOT active") == 1
    assert "OTEL_TRACES_EXPORTER=none" in err and "opentelemetry-exporter-otlp" in err


def test_the_failure_watch_stays_off_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_adaptive import _startup

    logger = logging.getLogger(_startup.AUTO_INSTRUMENTATION_LOGGER)
    before = list(logger.filters)
    for value in ("", "false"):
        monkeypatch.setenv("OTEL_ADAPTIVE_ENABLED", value)
        _startup.watch()
        assert logger.filters == before
