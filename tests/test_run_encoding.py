"""The stored form of runs: compact, versioned binary; JSON runs stored earlier still read."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import msgspec
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from otel_adaptive.cli import main
from otel_adaptive.records import (
    RUN_FORMAT_V1,
    CallRecord,
    RunFormatError,
    RunRecord,
    decode_run,
    encode_run,
)
from otel_adaptive.store.redis import RedisStore
from redis_helpers import learners

# A run exactly as the JSON encoding of earlier versions stored it (captured from it).
OLD_JSON_RUN = (
    b'{"id":"run-1","agent_id":"agent","trace_id":"00000000000000000000000000000001",'
    b'"start_ns":1700000000000000000,"end_ns":1700000000500000000,"calls":[{"kind":"llm",'
    b'"name":"plan","span_id":"00000000000000a1","parent_span_id":"00000000000000a0",'
    b'"path":["agent","step"],"start_ns":1700000000000000000,"end_ns":1700000000250000000,'
    b'"output_tokens":120,"prompt_tokens":40,"total_tokens":160,"model_name":"m-1",'
    b'"tool_call_count":null},{"kind":"tool","name":"search","span_id":"00000000000000a2",'
    b'"parent_span_id":"00000000000000a0","path":["agent","step"],'
    b'"start_ns":1700000000300000000,"end_ns":1700000000400000000,"output_tokens":null,'
    b'"prompt_tokens":null,"total_tokens":null,"model_name":null,"tool_call_count":null}],'
    b'"truncated":false,"schema_version":1}'
)
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def old_run() -> RunRecord:
    """The record ``OLD_JSON_RUN`` holds."""
    llm = CallRecord(
        kind="llm",
        name="plan",
        span_id="00000000000000a1",
        parent_span_id="00000000000000a0",
        path=("agent", "step"),
        start_ns=T0,
        end_ns=T0 + 250 * MS,
        output_tokens=120,
        prompt_tokens=40,
        total_tokens=160,
        model_name="m-1",
    )
    tool = CallRecord(
        kind="tool",
        name="search",
        span_id="00000000000000a2",
        parent_span_id="00000000000000a0",
        path=("agent", "step"),
        start_ns=T0 + 300 * MS,
        end_ns=T0 + 400 * MS,
    )
    return RunRecord(
        id="run-1",
        agent_id="agent",
        trace_id="0" * 31 + "1",
        start_ns=T0,
        end_ns=T0 + 500 * MS,
        calls=(llm, tool),
    )


def five_call_run(run_id: str = "r5") -> RunRecord:
    calls = [
        CallRecord(
            kind="llm",
            name=f"call-{i}",
            span_id=f"{i + 1:016x}",
            parent_span_id="00000000000000ff",
            path=("research-agent", "step"),
            start_ns=T0 + i * 100 * MS,
            end_ns=T0 + i * 100 * MS + 90 * MS,
            output_tokens=200 + i,
            prompt_tokens=1000,
            total_tokens=1200 + i,
            model_name="gpt-4o-mini",
            tool_call_count=1,
        )
        for i in range(5)
    ]
    calls += [
        CallRecord(
            kind="tool",
            name=f"tool-{i}",
            span_id=f"{i + 16:016x}",
            parent_span_id="00000000000000ff",
            path=("research-agent", "step"),
            start_ns=T0 + i * MS,
            end_ns=T0 + 2 * i * MS,
        )
        for i in range(3)
    ]
    return RunRecord(
        id=run_id,
        agent_id="research-agent",
        trace_id="ab" * 16,
        start_ns=T0,
        end_ns=T0 + 600 * MS,
        calls=tuple(calls),
    )


# -- the encoding itself -------------------------------------------------------------------

names = st.text(max_size=40)
optional_count = st.none() | st.integers(min_value=0, max_value=2**40)
calls = st.builds(
    CallRecord,
    kind=st.sampled_from(["llm", "tool"]),
    name=names,
    span_id=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    parent_span_id=st.none() | st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    path=st.lists(names, max_size=4).map(tuple),
    start_ns=st.integers(min_value=0, max_value=2**63 - 1),
    end_ns=st.integers(min_value=0, max_value=2**63 - 1),
    output_tokens=optional_count,
    prompt_tokens=optional_count,
    total_tokens=optional_count,
    model_name=st.none() | names,
    tool_call_count=st.none() | st.integers(min_value=0, max_value=1000),
)
runs = st.builds(
    RunRecord,
    id=names,
    agent_id=names,
    trace_id=names,
    start_ns=st.integers(min_value=0, max_value=2**63 - 1),
    end_ns=st.integers(min_value=0, max_value=2**63 - 1),
    calls=st.lists(calls, max_size=6).map(tuple),
    truncated=st.booleans(),
)


@given(runs)
def test_any_run_round_trips_through_the_binary_form(run: RunRecord) -> None:
    data = encode_run(run)
    assert data[0] == RUN_FORMAT_V1
    assert decode_run(data) == run


def test_the_binary_form_is_a_fraction_of_the_json_form() -> None:
    run = five_call_run()
    as_json = msgspec.json.encode(
        {**msgspec.structs.asdict(run), "calls": [msgspec.structs.asdict(c) for c in run.calls]}
    )  # the JSON form runs were stored in before
    assert decode_run(as_json) == run
    assert len(encode_run(run)) * 5 < len(as_json)  # 482 against 2,556 bytes


def test_a_run_stored_as_json_by_an_earlier_version_still_reads() -> None:
    decoded = decode_run(OLD_JSON_RUN)
    assert decoded == old_run()
    assert type(decoded) is RunRecord and all(type(c) is CallRecord for c in decoded.calls)
    assert decode_run(OLD_JSON_RUN.decode()) == old_run()  # str, as some clients return


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x93garbage", b"{not json", b'{"id": 3}'])
def test_corrupt_records_raise_a_decode_error(data: bytes) -> None:
    with pytest.raises(ValueError) as caught:
        decode_run(data)
    assert not isinstance(caught.value, RunFormatError)


@pytest.mark.parametrize("first", [0x00, 0x02, 0x7F, 0xFF])
def test_an_unknown_encoding_version_is_named(first: int) -> None:
    data = bytes([first]) + encode_run(old_run())[1:]
    with pytest.raises(RunFormatError, match=f"version {first}"):
        decode_run(data)


# -- in Redis -------------------------------------------------------------------------------


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[RedisStore]:
    created = RedisStore.from_url(redis_url, key_prefix=key_prefix, learners=learners())
    yield created
    created.close()


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def plant(store: RedisStore, admin: redis.Redis, run_id: str, data: bytes, end_s: float) -> None:
    """A record written behind the store's back, as another version would have."""
    admin.hset(store.keys.runs("agent"), run_id, data)
    admin.zadd(store.keys.run_index("agent"), {run_id: end_s})


def test_redis_stores_the_binary_form(store: RedisStore, admin: redis.Redis) -> None:
    run = msgspec.structs.replace(five_call_run(), agent_id="agent")
    store.save_runs([run])
    stored = admin.hget(store.keys.runs("agent"), run.id)
    assert stored is not None and stored[0] == RUN_FORMAT_V1
    assert decode_run(stored) == run
    assert store.list_runs("agent") == [run]


def test_old_json_runs_and_new_runs_list_together(store: RedisStore, admin: redis.Redis) -> None:
    store.save_runs([msgspec.structs.replace(five_call_run("new"), agent_id="agent")])
    plant(store, admin, "run-1", OLD_JSON_RUN, T0 / 1e9)  # older: listed first

    listed = store.list_runs("agent")
    assert [run.id for run in listed] == ["run-1", "new"]
    assert listed[0] == old_run()
    assert store.bad_data_count == 0


def test_corrupt_and_unknown_version_runs_are_skipped_counted_and_logged(
    store: RedisStore, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    good = msgspec.structs.replace(five_call_run("good"), agent_id="agent")
    store.save_runs([good])
    plant(store, admin, "corrupt", b"\x01\xc1broken", T0 / 1e9 + 1)
    plant(store, admin, "future", b"\x07" + encode_run(good)[1:], T0 / 1e9 + 2)

    with caplog.at_level(logging.WARNING, logger="otel_adaptive.store.redis"):
        assert [run.id for run in store.list_runs("agent")] == ["good"]
        assert [run.id for run in store.list_runs("agent")] == ["good"]
    assert store.bad_data_by_reason == {"corrupt": 2, "schema_version": 2}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # once per key and reason, however often it is met
    assert any("unknown run encoding version 7" in text for text in warnings)


def test_inspect_shows_old_and_new_runs(
    capsys: pytest.CaptureFixture[str], store: RedisStore, admin: redis.Redis, redis_url: str
) -> None:
    store.save_runs([msgspec.structs.replace(five_call_run("new"), agent_id="agent")])
    plant(store, admin, "run-1", OLD_JSON_RUN, T0 / 1e9)

    argv = ["inspect", "--agent", "agent", "--redis-url", redis_url]
    status = main([*argv, "--key-prefix", store.keys.prefix])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "Runs retained: 2" in out
