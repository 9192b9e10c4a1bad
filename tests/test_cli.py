"""The ``otel-adaptive`` command: demo, inspect, replay, doctor, run in-process and as a script."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from otel_adaptive.cli import _demo, main

DATA = Path(__file__).resolve().parent / "data"
MIXED = DATA / "mixed_traces.jsonl"
CONSOLE = DATA / "console_spans.json"
DEMO_AGENT = "otel-adaptive-demo"
THREE_TOOLS = ["get_weather", "search_docs", "search_web"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands read OTEL_ADAPTIVE_*; tests start from none, and wide tables."""
    for name in list(os.environ):
        if name.startswith("OTEL_ADAPTIVE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    status, out, err = run_cli(capsys, *argv, "--json")
    assert out, err
    return status, json.loads(out)


def without_timestamp(envelope: dict[str, Any] | None) -> dict[str, Any] | None:
    if envelope is None:
        return None
    return {key: value for key, value in envelope.items() if key != "generated_at"}


# --- the command itself ---------------------------------------------------------------------


def test_no_command_prints_help_and_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys)
    assert status == 2
    for command in ("demo", "inspect", "replay", "doctor", "config-doc"):
        assert command in out


def test_version_is_answered_without_importing_the_sdk_or_the_commands() -> None:
    probe = (
        "import sys; from otel_adaptive.cli import main; status = main(['--version']); "
        "heavy = [m for m in ('opentelemetry.sdk', 'redis', 'rich', 'otel_adaptive.processor') "
        "if m in sys.modules]; print(status, heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines() == ["otel-adaptive 0.1.0", "0 []"]


def test_a_runs_value_that_is_not_a_number_is_said_in_plain_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = run_cli(capsys, "demo", "--runs", "abc")
    assert status == 2
    assert "argument --runs: expected a whole number of runs, got 'abc'" in err
    assert "_positive" not in err


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "demo", "--runs", "0")[0] == 2
    assert run_cli(capsys, "inspect")[0] == 2  # --agent is required
    assert run_cli(capsys, "no-such-command")[0] == 2
    assert run_cli(capsys, "--help")[0] == 0


# --- demo -----------------------------------------------------------------------------------


def test_demo_prints_hints_per_call_site_parallel_groups_and_how_hints_changed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run_cli(capsys, "demo", "--runs", "12")
    assert status == 0, err
    assert "Learned hints per call site" in out
    for site in ("research/plan", "research/draft", "research/answer"):
        assert site in out
    assert "Tools that ran in parallel" in out
    assert ", ".join(THREE_TOOLS) in out
    assert "nothing learned yet" in out  # run 1 had nothing to go on
    history = out[out.index("as runs accumulated") :]
    for run in ("1", "2", "5", "10", "12"):
        assert f"│ {run:>3} │" in history


def test_demo_has_a_legend_rows_in_call_order_and_a_closing_command_that_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run_cli(capsys, "demo", "--runs", "6", "--key-prefix", "mine:")
    assert status == 0
    sites = [line.split("│")[1].strip() for line in out.splitlines() if "│ research/" in line]
    order = list(dict.fromkeys(sites))
    assert order == ["research/plan", "research/draft", "research/answer"]  # as called
    assert "osl: output tokens to expect" in out and "docs/hints.md" in out
    assert "--redis-url URL" not in out
    assert (
        "otel-adaptive inspect --agent otel-adaptive-demo --redis-url redis://127.0.0.1:6379/0"
        " --key-prefix mine:" in out
    )


def test_the_demo_tip_after_a_redis_run_names_the_url_and_key_prefix(
    capsys: pytest.CaptureFixture[str], redis_url: str, key_prefix: str
) -> None:
    status, out, _ = run_cli(
        capsys, "demo", "--runs", "2", "--redis-url", redis_url, "--key-prefix", key_prefix
    )
    assert status == 0
    assert (
        f"otel-adaptive inspect --agent otel-adaptive-demo --redis-url {redis_url} "
        f"--key-prefix {key_prefix}" in out
    )


def test_inspect_tables_fit_80_columns_with_names_on_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    key_prefix: str,
) -> None:
    store = ("--redis-url", redis_url, "--key-prefix", key_prefix)
    assert run_cli(capsys, "replay", str(MIXED), *store)[0] == 0
    monkeypatch.setenv("COLUMNS", "80")
    status, out, _ = run_cli(capsys, "inspect", "--agent", "replay-agent", *store)
    assert status == 0
    table_lines = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert table_lines and max(len(line) for line in table_lines) <= 80
    assert "invoke_agent\u00a0replay-agent" in out  # the name whole, on one line
    for header in ("path", "call", "p50", "p90", "left", "iat ms", "sens"):
        assert f" {header} " in out


def test_demo_json_shows_learning_from_the_second_run_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, document = run_json(capsys, "demo", "--runs", "10", "--agent-id", "json-demo")
    assert status == 0
    assert document["agent_id"] == "json-demo" and document["runs"] == 10
    history = document["hint_history"]
    assert [step["run"] for step in history] == list(range(1, 11))
    assert history[0]["hints"] is None
    assert all(step["hints"] is not None for step in history[1:])
    sites = {(tuple(s["path"]), s["call_index"]): s["hints"] for s in document["call_sites"]}
    plan_osl = sites[(("research", "plan"), 1)]["osl"]
    answer_osl = sites[(("research", "answer"), 1)]["osl"]
    assert 50 <= plan_osl <= 90 and 380 <= answer_osl <= 520  # the tokens the agent produced
    groups = [group["tool_names"] for group in document["plan"]["groups"]]
    assert THREE_TOOLS in groups
    assert document["trie"]["workflow_name"] == "json-demo"


def test_demo_total_requests_is_the_runs_call_count_for_every_call_of_a_fixed_agent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_demo, "_DRAFT_CALLS", (2, 2))  # plan, 2 drafts, answer: 4 calls
    status, document = run_json(capsys, "demo", "--runs", "6")
    assert status == 0
    sites = [(tuple(s["path"]), s["call_index"]) for s in document["call_sites"]]
    assert sites == [
        (("research", "plan"), 1),
        (("research", "draft"), 1),
        (("research", "draft"), 2),
        (("research", "answer"), 1),
    ]
    assert [s["hints"]["total_requests"] for s in document["call_sites"]] == [4, 4, 4, 4]
    answers = [step["hints"]["total_requests"] for step in document["hint_history"][1:]]
    assert answers == [4] * 5


def test_demo_with_redis_then_inspect_shows_the_same_learning(
    capsys: pytest.CaptureFixture[str], redis_url: str, key_prefix: str
) -> None:
    store = ("--redis-url", redis_url, "--key-prefix", key_prefix)
    status, demo = run_json(capsys, "demo", "--runs", "8", *store)
    assert status == 0
    status, inspected = run_json(capsys, "inspect", "--agent", DEMO_AGENT, *store)
    assert status == 0
    assert inspected["runs"]["count"] == 8
    assert inspected["store"]["key_prefix"] == key_prefix
    assert without_timestamp(inspected["trie"]) == without_timestamp(demo["trie"])
    assert inspected["plan"] == demo["plan"]
    root = inspected["trie"]["root"]["predictions_any_index"]
    llm_calls = root["remaining_calls"]["sample_count"]
    assert 8 * 3 <= llm_calls <= 8 * 5  # plan + 1..3 drafts + answer, per run

    status, out, _ = run_cli(capsys, "inspect", "--agent", DEMO_AGENT, *store)
    assert status == 0
    assert "Runs retained: 8" in out
    assert "Prediction trie" in out and "    answer" in out  # indented under research
    assert ", ".join(THREE_TOOLS) in out


def test_demo_reports_an_unreachable_redis_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "demo", "--runs", "3", "--redis-url", "redis://127.0.0.1:1/0")
    assert status == 1
    assert "redis://127.0.0.1:1/0" in err


# --- inspect --------------------------------------------------------------------------------


def test_inspect_without_redis_says_there_is_nothing_to_inspect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = run_cli(capsys, "inspect", "--agent", "anything")
    assert status == 1
    assert "nothing to inspect" in err and "OTEL_ADAPTIVE_REDIS_URL" in err


def test_inspect_reads_the_redis_url_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    key_prefix: str,
) -> None:
    monkeypatch.setenv("OTEL_ADAPTIVE_REDIS_URL", redis_url)
    monkeypatch.setenv("OTEL_ADAPTIVE_KEY_PREFIX", key_prefix)
    assert run_cli(capsys, "replay", str(MIXED))[0] == 0
    status, document = run_json(capsys, "inspect", "--agent", "replay-agent")
    assert status == 0
    assert document["runs"]["count"] == 3


def test_inspect_of_an_unknown_agent_fails_and_lists_the_known_ones(
    capsys: pytest.CaptureFixture[str], redis_url: str, key_prefix: str
) -> None:
    store = ("--redis-url", redis_url, "--key-prefix", key_prefix)
    assert run_cli(capsys, "replay", str(MIXED), *store)[0] == 0
    status, _, err = run_cli(capsys, "inspect", "--agent", "nobody", *store)
    assert status == 1
    assert "'nobody'" in err and "'replay-agent'" in err


def test_inspect_reports_an_invalid_configuration(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ADAPTIVE_REDIS_CLUSTER", "perhaps")
    status, _, err = run_cli(capsys, "inspect", "--agent", "a", "--redis-url", "redis://x:1")
    assert status == 1
    assert "OTEL_ADAPTIVE_REDIS_CLUSTER" in err and "'perhaps'" in err


# --- replay ---------------------------------------------------------------------------------


def test_replay_learns_from_valid_lines_and_reports_malformed_ones_by_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run_cli(capsys, "replay", str(MIXED))
    assert status == 0
    assert "Read 15 spans" in out
    assert "replay-agent" in out and "│    3 │" in out
    for line, reason in (
        (2, "traceId: expected 32 hex digits"),
        (4, "not valid JSON"),
        (6, "not valid JSON"),
    ):
        assert f"{MIXED}:{line}: " in out
        report = out[out.index(f"{MIXED}:{line}: ") :].splitlines()[0]
        assert reason in report


def test_replay_json_counts_spans_runs_and_rejected_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, document = run_json(capsys, "replay", str(MIXED), str(CONSOLE))
    assert status == 0
    assert document["spans_read"] == 15 + 6
    assert document["runs_learned"] == {"batch-svc": 2, "replay-agent": 3}
    assert [(Path(r["file"]).name, r["line"]) for r in document["rejected"]] == [
        ("mixed_traces.jsonl", 2),
        ("mixed_traces.jsonl", 4),
        ("mixed_traces.jsonl", 6),
    ]


def test_replay_names_plain_runs_after_the_agent_id_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, document = run_json(capsys, "replay", str(CONSOLE), "--agent-id", "nightly")
    assert status == 0
    assert document["runs_learned"] == {"nightly": 2}


def test_replay_reads_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", MIXED.open(encoding="utf-8"))
    status, document = run_json(capsys, "replay", "-")
    sys.stdin.close()
    assert status == 0
    assert document["runs_learned"] == {"replay-agent": 3}
    assert {r["file"] for r in document["rejected"]} == {"<stdin>"}


def test_replay_fails_when_nothing_could_be_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n[1, 2]\n", encoding="utf-8")
    status, out, _ = run_cli(capsys, "replay", str(junk), str(tmp_path / "missing.json"))
    assert status == 1
    assert f"{junk}:1: not valid JSON" in out
    assert f"{junk}:2: [0]: not a span object" in out
    assert "missing.json:0: cannot read the file" in out


def test_replaying_into_redis_keeps_the_runs_and_a_second_replay_does_not_duplicate_them(
    capsys: pytest.CaptureFixture[str], redis_url: str, key_prefix: str
) -> None:
    store = ("--redis-url", redis_url, "--key-prefix", key_prefix)
    for _ in range(2):
        status, document = run_json(capsys, "replay", str(MIXED), *store)
        assert status == 0 and document["stored"]
    status, inspected = run_json(capsys, "inspect", "--agent", "replay-agent", *store)
    assert status == 0
    assert inspected["runs"]["count"] == 3  # run ids come from trace and root span ids
    assert inspected["plan"]["groups"][0]["tool_names"] == ["lookup", "search"]


def _replay_in_a_new_process(*argv: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_ADAPTIVE_")}
    return subprocess.run(
        [sys.executable, "-m", "otel_adaptive.cli", "replay", *argv, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def test_replaying_the_same_spans_twice_in_two_processes_leaves_learned_state_unchanged(
    capsys: pytest.CaptureFixture[str], redis_url: str, key_prefix: str
) -> None:
    store = ("--redis-url", redis_url, "--key-prefix", key_prefix)
    first = _replay_in_a_new_process(str(MIXED), str(CONSOLE), *store)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["runs_already_learned"] == 0
    def inspected(agent: str) -> dict[str, Any]:
        document = run_json(capsys, "inspect", "--agent", agent, *store)[1]
        document["trie"] = without_timestamp(document["trie"])  # when inspect rendered it
        return document

    inspected_once = {agent: inspected(agent) for agent in ("replay-agent", "batch-svc")}
    second = _replay_in_a_new_process(str(MIXED), str(CONSOLE), *store)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["runs_already_learned"] == 5
    for agent, once in inspected_once.items():
        assert inspected(agent) == once
    root = inspected_once["replay-agent"]["trie"]["root"]["predictions_any_index"]
    assert root["remaining_calls"]["sample_count"] == 3 * 2  # two LLM calls in each of 3 runs
    status, out, _ = run_cli(capsys, "replay", str(MIXED), *store)
    assert status == 0 and "3 of these runs had been learned before" in out


def test_replay_reads_gzip_files_whatever_their_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    compressed = tmp_path / "traces.jsonl.gz"
    compressed.write_bytes(gzip.compress(MIXED.read_bytes()))
    renamed = tmp_path / "traces.otlp"
    renamed.write_bytes(compressed.read_bytes())
    for path in (compressed, renamed):
        status, document = run_json(capsys, "replay", str(path))
        assert status == 0
        assert document["spans_read"] == 15
        assert document["runs_learned"] == {"replay-agent": 3}
        assert [r["line"] for r in document["rejected"]] == [2, 4, 6]


def test_a_truncated_gzip_file_is_reported_and_what_came_before_is_learned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = gzip.compress(MIXED.read_bytes() * 400)  # several read chunks
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(data[: len(data) - 40])
    status, document = run_json(capsys, "replay", str(truncated))
    assert status == 0
    assert document["runs_learned"] == {"replay-agent": 3}
    assert any(
        r["line"] == 0 and "cannot read the file" in r["reason"] for r in document["rejected"]
    )


def test_a_malformed_line_in_the_middle_is_reported_by_number_and_the_rest_is_learned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = [line for n, line in enumerate(MIXED.read_text(encoding="utf-8").splitlines(), 1)
            if n in (1, 3, 5)]  # fmt: skip
    path = tmp_path / "middle.jsonl"
    path.write_text("\n".join([good[0], '{"resourceSpans": [{"oops"', *good[1:]]) + "\n")
    status, document = run_json(capsys, "replay", str(path))
    assert status == 0
    assert [(r["line"], r["reason"][:14]) for r in document["rejected"]] == [
        (2, "not valid JSON")
    ]
    assert document["runs_learned"] == {"replay-agent": 3}


def test_replay_shows_a_progress_bar_on_a_terminal_and_nothing_extra_otherwise(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run_cli(capsys, "replay", str(MIXED))
    assert status == 0 and err == ""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: treat standard error as a terminal
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    status, document = run_json(capsys, "replay", str(MIXED))
    assert status == 0 and document["runs_learned"] == {"replay-agent": 3}
    assert capsys.readouterr().err == ""  # --json: no bar
    status, out, err = run_cli(capsys, "replay", str(MIXED))
    assert status == 0
    assert "spans (" in err and "/s)" in err and "runs (" in err
    assert "Read 15 spans" in out


def test_replay_reports_an_unreachable_redis(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "replay", str(MIXED), "--redis-url", "redis://127.0.0.1:1/0")
    assert status == 1
    assert "redis://127.0.0.1:1/0" in err


# --- doctor ---------------------------------------------------------------------------------


def test_doctor_is_healthy_with_a_reachable_redis(
    capsys: pytest.CaptureFixture[str], redis_url: str, key_prefix: str
) -> None:
    status, out, _ = run_cli(capsys, "doctor", "--redis-url", redis_url, "--key-prefix", key_prefix)
    assert status == 0, out
    assert "Redis reachable" in out and "server version" in out and "standalone" in out
    assert "key schema" in out and "With this configuration the processor would" in out
    assert out.rstrip().endswith("healthy")


def test_doctor_without_redis_describes_the_in_memory_setup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run_cli(capsys, "doctor")
    assert status == 0
    assert "in-memory store" in out and "Redis reachable" not in out


def test_doctor_fails_on_an_invalid_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ADAPTIVE_SCHEDULE_DELAY_MILLIS", "soon")
    status, out, _ = run_cli(capsys, "doctor")
    assert status == 1
    assert "OTEL_ADAPTIVE_SCHEDULE_DELAY_MILLIS='soon'" in out
    assert out.rstrip().endswith("not healthy")


def test_doctor_names_a_misspelled_variable_suggests_the_real_one_and_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ADAPTIVE_REDISURL", "redis://127.0.0.1:6379/0")
    status, out, _ = run_cli(capsys, "doctor")
    assert status == 1
    assert "FAIL unknown variable: OTEL_ADAPTIVE_REDISURL is not a setting" in out
    assert "did you mean OTEL_ADAPTIVE_REDIS_URL?" in out
    assert out.rstrip().endswith("not healthy")


def _exporters(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "*")  # a faster start-up
    for signal in ("TRACES", "METRICS", "LOGS"):
        if value is None:
            monkeypatch.delenv(f"OTEL_{signal}_EXPORTER", raising=False)
        else:
            monkeypatch.setenv(f"OTEL_{signal}_EXPORTER", value)


def test_doctor_starts_the_zero_code_path_and_sees_the_processor_added(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ADAPTIVE_ENABLED", "true")
    _exporters(monkeypatch, "none")
    status, out, _ = run_cli(capsys, "doctor")
    assert status == 0, out
    assert "ok   zero-code activation: checked: the processor was added at start-up" in out


def test_doctor_reports_a_failed_auto_initialisation_with_the_fix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ADAPTIVE_ENABLED", "true")
    # An exporter no environment has: the auto-initialisation fails as it does on a fresh
    # venv without the OTLP exporter (which some test environments do have).
    _exporters(monkeypatch, "not_installed_exporter")
    status, out, _ = run_cli(capsys, "doctor")
    assert status == 1
    line = next(line for line in out.splitlines() if "zero-code activation" in line)
    assert line.startswith("FAIL") and "otel-adaptive is NOT active" in line
    assert "Requested component 'not_installed_exporter' not found" in line
    assert "OTEL_TRACES_EXPORTER=none" in line


def test_doctor_without_enabled_says_whether_activation_would_work(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _exporters(monkeypatch, "not_installed_exporter")
    status, out, _ = run_cli(capsys, "doctor")
    assert status == 0  # zero-code activation is not asked for: not a failure
    assert "With it set, the processor would NOT be added" in out


def test_doctor_fails_on_an_unreachable_redis(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "doctor", "--redis-url", "redis://127.0.0.1:1/0")
    assert status == 1
    assert "FAIL Redis reachable" in out


def test_doctor_never_prints_a_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    parts = urlsplit(redis_url)
    secret = "s3cr3t-Pa55word"
    with_password = urlunsplit(parts._replace(netloc=f"someone:{secret}@{parts.netloc}"))
    monkeypatch.setenv("OTEL_ADAPTIVE_REDIS_URL", with_password)
    status, out, err = run_cli(capsys, "doctor")
    assert status == 1  # this server has no such user
    assert secret not in out + err
    assert "someone:***@" in out


def test_doctor_flags_stored_data_of_another_schema_version(
    capsys: pytest.CaptureFixture[str], redis_url: str, key_prefix: str
) -> None:
    store = ("--redis-url", redis_url, "--key-prefix", key_prefix)
    assert run_cli(capsys, "replay", str(MIXED), *store)[0] == 0
    assert run_cli(capsys, "doctor", *store)[0] == 0
    client = redis.Redis.from_url(redis_url)
    try:
        [meta] = client.keys(f"{key_prefix}*:meta")
        client.hset(meta, "schema_version", "99")
    finally:
        client.close()
    status, out, _ = run_cli(capsys, "doctor", *store)
    assert status == 1
    assert "FAIL key schema" in out and "version 99: 'replay-agent'" in out


def test_doctor_checks_the_client_matches_a_cluster_server(
    capsys: pytest.CaptureFixture[str], redis_cluster: str, key_prefix: str
) -> None:
    status, out, _ = run_cli(
        capsys, "doctor", "--redis-url", redis_cluster, "--key-prefix", key_prefix
    )
    assert status == 1
    assert "FAIL cluster mode" in out and "OTEL_ADAPTIVE_REDIS_CLUSTER=true" in out
    status, out, _ = run_cli(
        capsys, "doctor", "--redis-url", redis_cluster + "?cluster=true", "--key-prefix", key_prefix
    )
    assert status == 0, out
    assert "cluster mode: cluster client" in out


# --- the installed console script -----------------------------------------------------------


def _console_script() -> Path:
    script = Path(sys.executable).parent / "otel-adaptive"
    if not script.exists():
        pytest.skip("the otel-adaptive console script is not installed next to this Python")
    return script


def test_the_console_script_runs_the_demo() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_ADAPTIVE_")}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [str(_console_script()), "demo", "--runs", "6"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Learned hints per call site" in result.stdout
    assert ", ".join(THREE_TOOLS) in result.stdout


def test_the_module_runs_as_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otel_adaptive.cli", "config-doc"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| `OTEL_ADAPTIVE_REDIS_URL` |" in result.stdout
