"""A webhook receiver for tests: an HTTP server on 127.0.0.1 in a thread that records every
POST (the seq header, the JSON body, the answer) and can fail the first ones."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SEQ_HEADER = "X-Compute-Agent-Event-Seq"


class Receiver:
    """Answers `fail_first` requests with 503, then 200 (each after `delay_s`). `port` 0:
    any free one; give the same port again to bring a receiver back after close()."""

    def __init__(self, port: int = 0, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.requests: list[tuple[int, dict[str, Any], int]] = []
        self.fail_first = fail_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name for it
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if delay_s:
                    threading.Event().wait(delay_s)
                with receiver._lock:
                    status = 503 if len(receiver.requests) < receiver.fail_first else 200
                    receiver.requests.append((int(self.headers[SEQ_HEADER]), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def acknowledged(self) -> list[tuple[int, dict[str, Any]]]:
        """(seq, body) of each request answered 200, in arrival order."""
        with self._lock:
            return [(seq, body) for seq, body, status in self.requests if status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
