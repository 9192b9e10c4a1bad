"""The ``otel-adaptive`` command: demo, inspect, replay, doctor, run in-process and as a script."""

from __future__ import annotations

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
