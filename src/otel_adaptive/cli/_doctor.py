"""``otel-adaptive doctor``: is the configuration valid and the store usable?

Checks the ``OTEL_ADAPTIVE_*`` configuration, Redis reachability, server
version, cluster mode and the key schema version of stored agents, then says
what the processor would do with this configuration. Passwords are never
printed: URLs are masked and error messages scrubbed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from rich.console import Console

from otel_adaptive._startup import failure_message
from otel_adaptive.cli._common import (
    FAILED,
    OK,
    CommandError,
    add_store_options,
    load_config,
    open_store,
    stdout_console,
    store_label,
    store_overrides,
)
from otel_adaptive.config import AdaptiveConfig, env_var_name
from otel_adaptive.redaction import Redactor
from otel_adaptive.store.base import StoreUnavailableError
from otel_adaptive.store.redis import STORE_SCHEMA_VERSION, RedisStore, _split_cluster_option

#: Agents whose key schema version is checked, at most.
_AGENTS_CHECKED = 100
_HOOK_GROUP = "opentelemetry_post_instrument"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "doctor",
        help="check the configuration and the store, and say what would happen",
        description=(
            "Check the OTEL_ADAPTIVE_* configuration, Redis reachability, server version, "
            "cluster mode and the key schema version, and print what the processor would do. "
            "Exit status 0 when healthy, 1 otherwise. Passwords are never printed."
        ),
    )
    add_store_options(parser, "Redis to check (default: OTEL_ADAPTIVE_REDIS_URL)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class _Check:
    ok: bool
    label: str
    detail: str = ""


def run(args: argparse.Namespace) -> int:
    console = stdout_console()
    set_vars = sorted(name for name in os.environ if name.startswith("OTEL_ADAPTIVE_"))
    shown = ", ".join(set_vars) if set_vars else "none (defaults)"
    config = load_config(**store_overrides(args))
    checks: list[_Check] = _unknown_variable_checks(set_vars)
    if isinstance(config, str):
        checks.append(_Check(False, "configuration", config))
    else:
        checks.append(_Check(True, "configuration", f"valid; variables set: {shown}"))
        if config.redis_url is not None:
            checks.extend(_redis_checks(config))
    for check in checks:
        _print_check(console, check)
    if not isinstance(config, str):
        console.print("\nWith this configuration the processor would:")
        for line in _plan(config):
            console.print(f"  - {line}", markup=False)
    console.print("\nZero-code activation (opentelemetry-instrument):")
    activation = _activation()
    for line in activation.lines:
        console.print(f"  - {line}", markup=False)
    if activation.check is not None:
        checks.append(activation.check)
        _print_check(console, activation.check)
    healthy = all(check.ok for check in checks)
    console.print("\nhealthy" if healthy else "\nnot healthy", style="green" if healthy else "red")
    return OK if healthy else FAILED


def _print_check(console: Console, check: _Check) -> None:
    mark = "[green]ok[/]  " if check.ok else "[bold red]FAIL[/]"
    console.print(f"{mark} {check.label}", end="")
    console.print(f": {check.detail}" if check.detail else "", markup=False)


def _unknown_variable_checks(set_vars: list[str]) -> list[_Check]:
    """A failed check per ``OTEL_ADAPTIVE_*`` variable no setting reads (a typo, usually)."""
    known = sorted(env_var_name(f.name) for f in fields(AdaptiveConfig))
    checks = []
    for name in set_vars:
        if name in known:
            continue
        nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {nearest[0]}?" if nearest else "see `otel-adaptive config-doc`"
        checks.append(
            _Check(False, "unknown variable", f"{name} is not a setting and is ignored; {hint}")
        )
    return checks


# --- Redis ----------------------------------------------------------------------------------


def _redis_checks(config: AdaptiveConfig) -> list[_Check]:
    assert config.redis_url is not None
    scrub = Redactor.for_urls(config.redis_url)
    try:
        store = open_store(config)
    except CommandError as exc:
        return [_Check(False, "Redis settings", scrub(str(exc)))]
    assert isinstance(store, RedisStore)
    label = store_label(store)
    try:
        client = _client(config)
    except (ValueError, RedisError, RedisClusterException) as exc:
        store.close()
        return [_Check(False, "Redis URL", scrub(f"{type(exc).__name__}: {exc}"))]
    checks: list[_Check] = []
    try:
        started = time.perf_counter()
        client.ping()
        elapsed_ms = (time.perf_counter() - started) * 1000
        checks.append(_Check(True, "Redis reachable", f"{label}; PING took {elapsed_ms:.1f} ms"))
        info = _server_info(client)
        version = info.get("redis_version", "unknown")
        mode = str(info.get("redis_mode", "standalone"))
        checks.append(_Check(True, "server version", f"{version}, {mode} mode"))
        checks.append(_mode_check(config, mode))
        checks.append(_schema_check(store, client))
    except StoreUnavailableError as exc:
        checks.append(_Check(False, "Redis", scrub(str(exc))))
    except (RedisError, RedisClusterException, OSError) as exc:
        detail = scrub(f"{type(exc).__name__}: {exc}")
        checks.append(_Check(False, "Redis reachable", f"{label}: {detail}"))
    finally:
        client.close()
        store.close()
    return checks


def _client(config: AdaptiveConfig) -> redis.Redis | RedisCluster:
    """A client for the configured URL with no retries (a health check must not linger)."""
    assert config.redis_url is not None
    url, cluster = _split_cluster_option(config.redis_url)
    options: dict[str, Any] = {
        "socket_timeout": config.redis_socket_timeout_seconds,
        "socket_connect_timeout": config.redis_connect_timeout_seconds,
        "retry": Retry(NoBackoff(), 0),
    }
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        value = getattr(config, f"redis_{name}")
        if value is not None:
            options[name] = value
    if cluster or config.redis_cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def _server_info(client: redis.Redis | RedisCluster) -> Mapping[str, Any]:
    if isinstance(client, RedisCluster):
        info = client.info("server", target_nodes=RedisCluster.DEFAULT_NODE)
    else:
        info = client.info("server")
    return info if isinstance(info, Mapping) else {}


def _mode_check(config: AdaptiveConfig, mode: str) -> _Check:
    assert config.redis_url is not None
    client_cluster = config.redis_cluster or _split_cluster_option(config.redis_url)[1]
    server_cluster = mode == "cluster"
    if client_cluster == server_cluster:
        return _Check(True, "cluster mode", "cluster client" if client_cluster else "standalone")
    if server_cluster:
        return _Check(
            False,
            "cluster mode",
            "the server is a cluster node but the standalone client is configured: set "
            "OTEL_ADAPTIVE_REDIS_CLUSTER=true (or add ?cluster=true to the URL)",
        )
    return _Check(
        False,
        "cluster mode",
        "the cluster client is configured but the server is standalone: unset "
        "OTEL_ADAPTIVE_REDIS_CLUSTER",
    )


def _schema_check(store: RedisStore, client: redis.Redis | RedisCluster) -> _Check:
    agents = store.agents()
    if not agents:
        return _Check(
            True,
            "key schema",
            f"no agents stored under prefix {store.keys.prefix!r} yet; this version writes "
            f"schema {STORE_SCHEMA_VERSION}",
        )
    checked = agents[:_AGENTS_CHECKED]
    found: dict[str, list[str]] = {}
    for agent in checked:
        raw = client.hget(store.keys.meta(agent), "schema_version")
        version = raw.decode() if isinstance(raw, bytes) else str(raw) if raw else "missing"
        found.setdefault(version, []).append(agent)
    expected = str(STORE_SCHEMA_VERSION)
    others = {version: names for version, names in found.items() if version != expected}
    summary = f"{len(checked)} of {len(agents)} agents checked"
    if not others:
        return _Check(True, "key schema", f"version {expected} ({summary})")
    problems = "; ".join(
        f"version {version}: {', '.join(repr(n) for n in names[:5])}"
        + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        for version, names in sorted(others.items())
    )
    return _Check(
        False,
        "key schema",
        f"this version reads and writes schema {expected}, but found {problems} ({summary}); "
        "see OTEL_ADAPTIVE_ON_BAD_DATA",
    )


# --- what would happen ----------------------------------------------------------------------


def _plan(config: AdaptiveConfig) -> list[str]:
    lines = []
    if not config.enabled:
        lines.append("ignore every span (OTEL_ADAPTIVE_ENABLED is false)")
        return lines
    if config.run_root == "agent_or_root":
        lines.append("treat each outermost agent span as a run, else each local root span")
    else:
        lines.append("treat each outermost agent span as a run (traces without one are ignored)")
    fallback = config.agent_id or "the service.name resource attribute"
    lines.append(f"name runs whose root is not an agent span after {fallback}")
    lines.append(f"learn with: {', '.join(config.learners) or 'no learners'}")
    try:
        store = open_store(config)
    except CommandError:
        lines.append("keep runs and learned state in Redis, once its settings are fixed")
    else:
        lines.append(f"keep runs and learned state in the {store_label(store)}")
        store.close()
    age = (
        ""
        if config.run_max_age_seconds is None
        else f", none older than {config.run_max_age_seconds:g} s"
    )
    lines.append(f"retain the newest {config.max_runs_per_agent} runs per agent{age}")
    targets = []
    if config.hint_body_path:
        targets.append(f"request bodies at {config.hint_body_path}")
    if config.hint_header:
        targets.append(f"the {config.hint_header} header")
    if config.hint_session_header:
        targets.append(f"the {config.hint_session_header} header")
    lines.append(
        f"inject hints ({config.hint_profile} profile) into " + " and ".join(targets)
        if targets
        else "inject hints nowhere (no body path or header)"
    )
    lines.append(
        f"export in batches of up to {config.max_export_batch_size} span events every "
        f"{config.schedule_delay_millis} ms from a queue of {config.max_queue_size}"
    )
    return lines


@dataclass(frozen=True)
class _Activation:
    lines: list[str]
    check: _Check | None  # None: zero-code activation is not turned on, nothing to fail


def _activation() -> _Activation:
    lines = []
    hooks = [ep for ep in entry_points(group=_HOOK_GROUP) if ep.value.startswith("otel_adaptive.")]
    if hooks:
        lines.append(f"entry point registered: {hooks[0].value}")
    else:
        lines.append("entry point not registered (reinstall otel-adaptive)")
    enabled = os.environ.get("OTEL_ADAPTIVE_ENABLED", "").strip().lower() in _TRUE_WORDS
    launcher = _launcher()
    if launcher is None:
        problem = "opentelemetry-instrument is not installed (pip install opentelemetry-distro)"
        if enabled:
            return _Activation(lines, _Check(False, "zero-code activation", problem))
        return _Activation([*lines, problem], None)
    outcome = _probe(launcher)
    if enabled:
        return _Activation(lines, _Check(outcome.ok, "zero-code activation", outcome.detail))
    verdict = "would be added" if outcome.ok else "would NOT be added"
    lines.append(
        f"OTEL_ADAPTIVE_ENABLED is not true: the hook does nothing. With it set, the processor "
        f"{verdict}: {outcome.detail}"
    )
    return _Activation(lines, None)


def _launcher() -> str | None:
    """``opentelemetry-instrument`` of this environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "opentelemetry-instrument"
    return str(beside) if beside.exists() else shutil.which("opentelemetry-instrument")


def _probe(launcher: str) -> _Check:
    """Start a Python under ``opentelemetry-instrument`` with this environment (and
    OTEL_ADAPTIVE_ENABLED=true) and ask it whether our hook added the processor."""
    env = {**os.environ, "OTEL_ADAPTIVE_ENABLED": "true"}
    try:
        result = subprocess.run(
            [launcher, sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_SECONDS,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _Check(False, "zero-code activation", f"could not run {launcher}: {exc}")
    answer = next(
        (line for line in result.stdout.splitlines() if line.startswith(_PROBE_TAG)), None
    )
    report = json.loads(answer[len(_PROBE_TAG) :]) if answer else {}
    if report.get("installed"):
        return _Check(True, "zero-code activation", "checked: the processor was added at start-up")
    return _Check(False, "zero-code activation", _why_not_added(result.stderr, report))


def _why_not_added(stderr: str, report: Mapping[str, Any]) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    ours = next((line for line in lines if "otel-adaptive is NOT active" in line), None)
    if ours is not None:
        return ours.removeprefix("otel-adaptive: ERROR: ")
    if any(line.startswith("Failed to auto initialize") for line in lines):
        # The start-up check did not run (an editable install has no .pth file): the
        # same message, from the error the traceback ends with.
        errors = [line for line in lines if re.match(r"^[A-Za-z_.]+(Error|Exception): ", line)]
        error = RuntimeError(errors[-1].split(": ", 1)[1]) if errors else None
        return failure_message(error).strip().removeprefix("otel-adaptive: ERROR: ")
    provider = report.get("provider")
    if provider and provider != "TracerProvider":
        return (
            f"the tracer provider is {provider}, not the SDK's TracerProvider: install "
            "opentelemetry-distro (it sets the SDK up under opentelemetry-instrument)"
        )
    tail = lines[-1] if lines else "no output"
    return f"the processor was not added ({tail})"


_PROBE_TAG = "otel-adaptive-probe: "
_PROBE_TIMEOUT_SECONDS = 60
_PROBE = f"""
import json
from opentelemetry import trace
from otel_adaptive import autoload
processor = autoload.installed()
print({_PROBE_TAG!r} + json.dumps({{
    "installed": processor is not None,
    "provider": type(trace.get_tracer_provider()).__name__,
}}))
"""
