"""Every Redis URL form the docs list, against real servers: redis://, rediss://,
unix:// (with db and password, in the query or the user part) and ?cluster=true."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from otel_adaptive.cli import main
from otel_adaptive.learners import LEARNER_TYPES, build_learners
from otel_adaptive.store.redis import RedisStore, StoreAuthenticationError
from redis_servers import RedisServer, TlsRedis

MIXED = Path(__file__).resolve().parent / "data" / "mixed_traces.jsonl"
PASSWORD = "unix-pa55"


@pytest.fixture(scope="module")
def socket_redis() -> Iterator[tuple[RedisServer, Path]]:
    """A password-protected redis-server that also listens on a Unix socket."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH")
    directory = Path(tempfile.mkdtemp(prefix="rsock-", dir="/tmp"))  # socket paths are short
    socket = directory / "redis.sock"
    server = RedisServer(
        executable,
        extra_args=["--unixsocket", str(socket), "--unixsocketperm", "700",
                    "--requirepass", PASSWORD],
        url_userinfo=f":{PASSWORD}@",
    )  # fmt: skip
    server.start()
    try:
        yield server, socket
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


def _replay(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> dict[str, Any]:
    status = main(["replay", str(MIXED), "--redis-url", url, "--key-prefix", "urls:", *extra,
                   "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    document: dict[str, Any] = json.loads(captured.out)
    return document


def _runs_in_db(server: RedisServer, db: int, prefix: str = "urls:") -> int:
    with redis.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/{db}") as client:
        return sum(1 for _ in client.scan_iter(match=f"{prefix}*"))


@pytest.mark.parametrize(
    "form",
    [
        "unix://{socket}?db=3&password={password}",
        "unix://:{password}@{socket}?db=4",
    ],
)
def test_unix_socket_urls_with_db_and_password_work(
    capsys: pytest.CaptureFixture[str], socket_redis: tuple[RedisServer, Path], form: str
) -> None:
    server, socket = socket_redis
    url = form.format(socket=socket, password=PASSWORD)
    assert url.startswith("unix://")
    db = int(url.rsplit("db=", 1)[1].split("&")[0])
    document = _replay(capsys, url)
    assert document["runs_learned"] == {"replay-agent": 3}
    assert document["store"]["url"].startswith("unix://")
    assert "unix:/tmp" not in json.dumps(document)  # the "//" is kept
    assert PASSWORD not in json.dumps(document)
    assert _runs_in_db(server, db) > 0
    assert _runs_in_db(server, 0) == 0  # the db option was honoured


def test_a_redis_url_with_password_and_db_works(
    capsys: pytest.CaptureFixture[str], socket_redis: tuple[RedisServer, Path]
) -> None:
    server, _ = socket_redis
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/5"
    assert _replay(capsys, url)["runs_learned"] == {"replay-agent": 3}
    assert _runs_in_db(server, 5) > 0


def test_a_missing_password_is_said_in_plain_words(
    capsys: pytest.CaptureFixture[str], socket_redis: tuple[RedisServer, Path]
) -> None:
    server, socket = socket_redis
    for url in (f"unix://{socket}?db=3", f"redis://127.0.0.1:{server.port}/0"):
        status = main(["replay", str(MIXED), "--redis-url", url])
        err = capsys.readouterr().err
        assert status == 1
        assert "HELLO must be called" not in err
        assert "needs a password" in err and "none was given" in err
    store = RedisStore.from_url(f"unix://{socket}", learners=build_learners(LEARNER_TYPES))
    try:
        with pytest.raises(StoreAuthenticationError, match="needs a password"):
            store.agents()
    finally:
        store.close()


def test_a_rediss_url_works(capsys: pytest.CaptureFixture[str], tls_redis: TlsRedis,
                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("OTEL_ADAPTIVE_REDIS_SSL_CA_CERTS", str(tls_redis.files.ca_cert))
    url = tls_redis.url_with(tls_redis.username, tls_redis.password)
    assert _replay(capsys, url)["runs_learned"] == {"replay-agent": 3}


def test_a_cluster_option_in_the_url_selects_the_cluster_client(
    capsys: pytest.CaptureFixture[str], redis_cluster: str
) -> None:
    document = _replay(capsys, f"{redis_cluster}?cluster=true")
    assert document["runs_learned"] == {"replay-agent": 3}
    assert document["store"]["cluster"] is True
