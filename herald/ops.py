"""The operations endpoint of `herald worker` and `herald notifier`: /healthz, /readyz, /metrics.

The receiver serves these on its own port; the workers have no HTTP server of their own, so
they get this small one on HERALD_METRICS_LISTEN (e.g. `0.0.0.0:9090`; unset: none). Kubernetes
probes and Prometheus need nothing more, so it is the standard library's server and
prometheus-client's exposition, not a web framework.

- /healthz: the process is alive (the HTTP thread answers);
- /readyz: the bus can take messages now (a worker with no broker cannot do its job, and
  KEDA or a Deployment's readiness should see that);
- /metrics: this process' metrics in Prometheus' text format.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("herald.ops")


class OpsServer:
    def __init__(self, listen: str, ready: Callable[[], bool]) -> None:
        host, _, port = listen.rpartition(":")
        self.ready = ready
        self._http = ThreadingHTTPServer(((host or "0.0.0.0").strip("[]"), int(port)), self._handler())
        self._http.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def start(self) -> OpsServer:
        self._thread = threading.Thread(target=self._http.serve_forever, name="herald-ops", daemon=True)
        self._thread.start()
        log.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics)",
                 *self._http.server_address[:2])
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(5)
        self._http.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._answer(200, b"ok\n")
                elif path == "/readyz":
                    try:
                        ok = server.ready()
                    except Exception:  # noqa: BLE001 - a failing probe means not ready
                        ok = False
                    self._answer(200 if ok else 503, b"ready\n" if ok else b"bus unavailable\n")
                elif path == "/metrics":
                    self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                else:
                    self._answer(404, b"not found\n")

            def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - probes every few seconds
                pass

        return Handler
