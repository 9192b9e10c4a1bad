"""A planted Redis password appears in no output: repr, errors, logs, CLI, stats.

Every way the project shows a URL or a setting is exercised with a password in
the URL (several spellings, several wrong URLs), against a dead port and a real
server that rejects the credentials; everything written to stdout, stderr and
the logs at DEBUG (tracebacks included) is scanned for the password.
"""

from __future__ import annotations

import io
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_adaptive import autoload
from otel_adaptive.cli import main
from otel_adaptive.config import _SPECS, AdaptiveConfig, ConfigError
from otel_adaptive.processor import AdaptiveSpanProcessor
from otel_adaptive.redaction import Redactor, mask_url, redact_text, url_secrets
from otel_adaptive.store.redis import RedisStore
from redis_helpers import Tally, learners, make_run, tally_delta
from redis_servers import RedisServer, find_redis_server, free_port
from spans import LLM, agent_attrs, timed_span, usage

# Distinctive enough that a hit can only be a leak; with characters that URL
# quoting and repr() spell differently.
SECRET = "Pl4nted-s3cret/pw#x'y%z"
QUOTED = quote(SECRET, safe="")
SPELLINGS = (SECRET, QUOTED, repr(SECRET)[1:-1], "Pl4nted-s3cret")
SERVER_PASSWORD = "the-right-password"
CONSOLE = Path(__file__).resolve().parent / "data" / "console_spans.json"


def assert_clean(text: str, where: str) -> None:
    for spelling in SPELLINGS:
        assert spelling not in text, f"password leaked in {where}: {text[:2000]}"


def secret_urls(port: int) -> list[str]:
    """URLs carrying the secret, in every spelling users write."""
    return [
        f"redis://fleet-writer:{QUOTED}@127.0.0.1:{port}/0",
        f"redis://:{QUOTED}@127.0.0.1:{port}/0",
        f"redis://127.0.0.1:{port}/0?password={QUOTED}",
        f"redis://fleet-writer:{QUOTED}@127.0.0.1:{port}/0?cluster=true",
    ]


BAD_URLS = [
    f"valkey://user:{QUOTED}@host:6379",
    f"valkey://user:{SECRET}@host:6379",
    f"http://user:{QUOTED}@host/",
    f" redis://user:{QUOTED}@host:6379",
    f"user:{QUOTED}@host:6379",
    f"'redis://user:{QUOTED}@host'",
    f"redis://user:{SECRET}@host:6379/0",  # unencoded '/' and '#': not even a valid URL
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_ADAPTIVE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(autoload, "_installed", None)


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Every log record of every logger at DEBUG, formatted with its traceback."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def guarded_server() -> Iterator[RedisServer]:
    """A real Redis that requires a password (not the planted one)."""
    executable = find_redis_server()
    if executable is None:
        pytest.skip("no redis-server")
    server = RedisServer(
        executable,
        extra_args=["--requirepass", SERVER_PASSWORD],
        client_options={"password": SERVER_PASSWORD},
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


def dead_port() -> int:
    return free_port()


# --- the redaction itself ---------------------------------------------------------------------


@pytest.mark.parametrize("url", [*secret_urls(6379), *BAD_URLS])
def test_mask_url_and_redact_text_hide_every_spelling(url: str) -> None:
    assert_clean(mask_url(url), "mask_url")
    assert_clean(redact_text(f"failed to reach {url} twice"), "redact_text")
    assert_clean(Redactor.for_urls(url)(f"error: {url!r} and {SECRET}"), "Redactor")


def test_mask_url_keeps_what_is_not_secret() -> None:
    assert mask_url("redis://fleet-writer:pw@db.internal:6380/2") == (
        "redis://fleet-writer:***@db.internal:6380/2"
    )
    assert mask_url("redis://db:6379/0?password=pw&db=1") == "redis://db:6379/0?password=***&db=1"
    assert mask_url("redis://db:6379/0") == "redis://db:6379/0"
    assert mask_url("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock?db=1"
    assert url_secrets("redis://u:a%40b@h/0") == ("a%40b", "a@b")


# --- config: repr, str, every error -------------------------------------------------------------


def test_config_repr_and_str_mask_the_password() -> None:
    for url in secret_urls(6379):
        config = AdaptiveConfig(redis_url=url)
        assert_clean(repr(config), "repr(AdaptiveConfig)")
        assert_clean(str(config), "str(AdaptiveConfig)")
        assert "redis_url=" in repr(config) and "127.0.0.1:6379" in repr(config)
    # Every other field is still shown.
    shown = repr(AdaptiveConfig())
    for spec in _SPECS:
        assert f"{spec.name}=" in shown


@pytest.mark.parametrize("url", BAD_URLS)
def test_every_error_about_a_bad_url_masks_it(url: str) -> None:
    if url.startswith("redis://"):
        # Only the scheme is checked up front; the store and CLI tests cover the rest.
        assert_clean(repr(AdaptiveConfig(redis_url=url)), "repr(AdaptiveConfig)")
        return
    with pytest.raises(ConfigError) as in_code:
        AdaptiveConfig(redis_url=url)
    assert_clean(str(in_code.value), "ConfigError (code)")
    assert "redis_url" in str(in_code.value)
    if url.strip().startswith("redis://"):
        return  # the environment's value is stripped, and then valid
    with pytest.raises(ConfigError) as from_env:
        AdaptiveConfig.from_env({"OTEL_ADAPTIVE_REDIS_URL": url})
    assert_clean(str(from_env.value), "ConfigError (environment)")
    assert "OTEL_ADAPTIVE_REDIS_URL" in str(from_env.value)


def test_no_other_config_error_shows_the_password() -> None:
    url = secret_urls(6379)[0]
    bad_values: dict[str, Any] = {"max_export_batch_size": 10**6}  # the cross-field check
    for spec in _SPECS:
        if spec.name != "redis_url":
            bad_values[spec.name] = object()
    for name, value in bad_values.items():
        with pytest.raises(ConfigError) as raised:
            AdaptiveConfig(redis_url=url, **{name: value})
        assert_clean(str(raised.value), f"ConfigError for {name}")
        env = {"OTEL_ADAPTIVE_REDIS_URL": url, f"OTEL_ADAPTIVE_{name.upper()}": "!bad!"}
        try:
            AdaptiveConfig.from_env(env)
        except ConfigError as exc:
            assert_clean(str(exc), f"ConfigError for OTEL_ADAPTIVE_{name.upper()}")


# --- the store: repr, describe, stats, errors, logs ---------------------------------------------


def test_store_never_shows_the_password_even_when_it_fails(
    all_logs: io.StringIO, guarded_server: RedisServer
) -> None:
    urls = [*secret_urls(dead_port()), *secret_urls(guarded_server.port)[:3], BAD_URLS[-1]]
    for url in urls:
        store = RedisStore.from_url(url, learners=learners(), socket_timeout=0.5)
        shown = [repr(store), str(store.describe()), str(store.stats())]
        for operation in (
            lambda s: s.agents(),
            lambda s: s.save_runs([make_run("a", "r1")]),
            lambda s: s.merge("b1", [tally_delta("a", runs=Tally(1))]),
            lambda s: s.load_fields("a", "tally"),
            lambda s: s.list_runs("a"),
        ):
            try:
                operation(store)
            except Exception as exc:
                shown.append("".join(traceback.format_exception(exc)))
        store.close()
        for text in shown:
            assert_clean(text, f"store output for {mask_url(url)}")
        assert any("Error" in text for text in shown)  # it did fail, visibly
    assert_clean(all_logs.getvalue(), "logs")


def test_processor_logs_at_debug_from_a_failing_connection_show_no_password(
    all_logs: io.StringIO, guarded_server: RedisServer, capfd: pytest.CaptureFixture[str]
) -> None:
    for url in (secret_urls(dead_port())[0], secret_urls(guarded_server.port)[0]):
        config = AdaptiveConfig(
            redis_url=url,
            schedule_delay_millis=20,
            redis_socket_timeout_seconds=0.3,
            redis_connect_timeout_seconds=0.3,
        )
        provider = TracerProvider()
        processor = AdaptiveSpanProcessor(config)
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("leak-test")
        with timed_span(tracer, "run", 0, 100, agent_attrs("leaky")):
            with timed_span(tracer, "chat m", 10, 20, LLM, end_attributes=usage(3)):
                pass
        processor.force_flush(2000)
        assert_clean(repr(processor.stats()), "processor.stats()")
        provider.shutdown()
    logs = all_logs.getvalue()
    assert "could not write" in logs  # the failure was logged, at least once per processor
    assert_clean(logs, "logs at DEBUG")
    captured = capfd.readouterr()
    assert_clean(captured.out + captured.err, "stdout/stderr")


# --- zero-code activation -----------------------------------------------------------------------


def test_autoload_log_lines_show_no_password(all_logs: io.StringIO) -> None:
    for url in [*BAD_URLS, secret_urls(dead_port())[0]]:
        autoload._installed = None
        environ = {"OTEL_ADAPTIVE_ENABLED": "true", "OTEL_ADAPTIVE_REDIS_URL": url}
        processor = autoload.install(environ, TracerProvider())
        if processor is not None:
            processor.shutdown()
    environ = {
        "OTEL_ADAPTIVE_ENABLED": "true",
        "OTEL_ADAPTIVE_REDIS_URL": secret_urls(dead_port())[0],
        "OTEL_ADAPTIVE_REDIS_SSL_CA_CERTS": "/nonexistent/ca.pem",  # fails while building
    }
    autoload._installed = None
    autoload.install(environ, TracerProvider())
    logs = all_logs.getvalue()
    assert "is not active" in logs and "processor added (Redis store at" in logs
    assert_clean(logs, "autoload logs")


# --- every CLI command --------------------------------------------------------------------------


def cli_runs(redis_url: str) -> list[list[str]]:
    return [
        ["doctor", "--redis-url", redis_url],
        ["inspect", "--agent", "a", "--redis-url", redis_url],
        ["inspect", "--agent", "a", "--redis-url", redis_url, "--json"],
        ["replay", str(CONSOLE), "--redis-url", redis_url],
        ["replay", str(CONSOLE), "--redis-url", redis_url, "--json"],
        ["demo", "--runs", "2", "--redis-url", redis_url],
        ["demo", "--runs", "2", "--redis-url", redis_url, "--json"],
        ["config-doc"],
    ]


def test_no_cli_command_prints_the_password(
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    all_logs: io.StringIO,
    guarded_server: RedisServer,
    redis_url: str,
) -> None:
    # doctor starts the activation path in a subprocess: with no exporter to reach it
    # starts fast whatever exporters the environment has installed.
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "*")
    for signal in ("TRACES", "METRICS", "LOGS"):
        monkeypatch.setenv(f"OTEL_{signal}_EXPORTER", "none")
    reachable = redis_url.replace("redis://", f"redis://default:{QUOTED}@", 1)
    urls = [
        *secret_urls(dead_port())[:3],
        secret_urls(guarded_server.port)[0],
        *BAD_URLS[:3],
    ]
    outputs = 0
    for url in urls:
        for argv in cli_runs(url):
            # Once through the option, once through the environment.
            main(argv)
            monkeypatch.setenv("OTEL_ADAPTIVE_REDIS_URL", url)
            main([arg for arg in argv if arg not in ("--redis-url", url)])
            monkeypatch.delenv("OTEL_ADAPTIVE_REDIS_URL")
            captured = capfd.readouterr()
            assert_clean(captured.out + captured.err, f"otel-adaptive {' '.join(argv[:1])}")
            outputs += bool(captured.out or captured.err)
    assert outputs == len(urls) * len(cli_runs("x"))
    assert_clean(all_logs.getvalue(), "CLI logs")
    # A server that takes any password (no requirepass), so every command succeeds too.
    for argv in cli_runs(reachable):
        main(argv)
        captured = capfd.readouterr()
        assert_clean(captured.out + captured.err, f"otel-adaptive {argv[0]} (healthy)")
