"""Serving a test HTTP server (Slack, the Git forges, the chat services) on a thread."""

from __future__ import annotations

import threading
from socketserver import BaseServer
from typing import Self


class ServedOnAThread:
    """`start()`, `stop()` and `with` for a class whose `_http` is a bound server."""

    _http: BaseServer
    _thread: threading.Thread | None = None
    thread_name = "local-api"

    def start(self) -> Self:
        # A short poll keeps stop(), and so each test's teardown, from waiting out the default 0.5 s.
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
