"""A tiny OTLP/HTTP trace sink: accepts ``POST /v1/traces`` with 200, counts what arrived.

Benchmarks run it as a subprocess so its CPU is not counted in theirs. It prints
``port <n>`` on its first line once it listens; ``GET /count`` returns JSON with the
requests, bytes and spans received so far (spans are counted when the
``opentelemetry-proto`` package is importable, else reported as ``null``).

    python benchmarks/otlp_sink.py [--port 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
except ImportError:  # spans are then not counted, requests still are
    ExportTraceServiceRequest = None
    ExportTraceServiceResponse = None

PATH = "/v1/traces"


class _Totals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.spans: int | None = 0 if ExportTraceServiceRequest is not None else None

    def add(self, body: bytes) -> None:
        spans = _count_spans(body)
        with self.lock:
            self.requests += 1
            self.bytes += len(body)
            if self.spans is not None and spans is not None:
                self.spans += spans

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "bytes": self.bytes, "spans": self.spans}


def _count_spans(body: bytes) -> int | None:
    if ExportTraceServiceRequest is None:
        return None
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


TOTALS = _Totals()
# An empty ExportTraceServiceResponse: what a collector answers when it took everything.
_OK_BODY = (
    b"" if ExportTraceServiceResponse is None else ExportTraceServiceResponse().SerializeToString()
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the exporter's session reuses one connection

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path != PATH:
            self._reply(404, b"", "text/plain")
            return
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        TOTALS.add(body)
        self._reply(200, _OK_BODY, "application/x-protobuf")

    def do_GET(self) -> None:
        if self.path != "/count":
            self._reply(404, b"", "text/plain")
            return
        self._reply(200, json.dumps(TOTALS.as_dict()).encode(), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would cost more than the request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
