"""The receiver's one HTTP server, gunicorn, for every way Herald is started.

The receiver faces the internet, so one server reads every request the same way, strictly
(RFC 9112 framing, header limits, a read deadline, slow clients holding no thread: see
receiver.gunicorn_worker), whether it runs as:

- `web` in the Procfile, or gunicorn in an image: gunicorn's own command, which reads
  gunicorn.conf.py → receiver.gunicorn_config;
- `herald receiver`: the same gunicorn, arbiter and worker processes included, started from
  the CLI with the CLI's settings (`run_arbiter`);
- `herald serve`: receiver, reconciler and notifier in ONE process on the embedded bus. The
  arbiter forks workers, which a process already running the reconciler's and notifier's
  threads must not do, so here one gunicorn worker runs in the calling thread, without an
  arbiter (`serve_in_process`), with the app Herald already built. gevent's worker would
  monkeypatch that process, so it is the threaded worker (receiver.gunicorn_worker): the same
  parser, limits, deadlines and answers, with a waiting client holding no thread either.

Both load receiver.gunicorn_config and then GUNICORN_CMD_ARGS, as gunicorn's own command
does, so the HERALD_* variables mean the same thing everywhere; `--listen` (HERALD_LISTEN,
PORT) sets the address.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from gunicorn import glogging
from gunicorn import sock as gsock
from gunicorn.app.base import Application
from gunicorn.workers.gthread import ThreadWorker

from herald.settings import Settings

CONFIG_MODULE = "receiver.gunicorn_config"

log = logging.getLogger("herald.receiver")


class ReceiverServer(Application):
    """gunicorn configured as the receiver: receiver.gunicorn_config, then GUNICORN_CMD_ARGS,
    then the CLI's address. Serves `app` when given, else `create_app(settings)` per worker."""

    def __init__(self, settings: Settings, app: Any = None) -> None:
        self.settings = settings
        self._app = app
        super().__init__(prog="herald")

    def init(self, parser: Any, opts: Any, args: Any) -> None:  # pragma: no cover - unused
        return None

    def load_config(self) -> None:
        self.load_config_from_module_name_or_filename(f"python:{CONFIG_MODULE}")
        from_env = self.cfg.parser().parse_args(self.cfg.get_cmd_args_from_env())
        for name, value in vars(from_env).items():
            if value is not None and name != "args":
                self.cfg.set(name.lower(), value)
        self.cfg.set("bind", [self.settings.listen])

    def load(self) -> Any:
        if self._app is not None:
            return self._app
        from receiver.app import create_app

        return create_app(settings=self.settings)


def run_arbiter(settings: Settings) -> None:
    """`herald receiver`: gunicorn's arbiter and its workers, as `web` runs them. Returns (or
    raises SystemExit) when gunicorn has shut down."""
    ReceiverServer(settings).run()


class _PropagatingLogger(glogging.Logger):
    """gunicorn's messages through Herald's own logging (format, level, JSON), not gunicorn's
    handlers: in `herald serve` they share the process' log with the other components."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def serve_in_process(app: Any, settings: Settings, stop: threading.Event) -> None:
    """`herald serve`: one gunicorn worker serving `app` in this thread (the main thread: it
    takes SIGTERM and SIGINT) until a signal arrives or `stop` is set.

    SIGTERM and SIGINT both shut down gracefully, as under the arbiter: no new connections,
    requests in flight finish within gunicorn's graceful timeout. `stop` is set on return.
    """
    server = ReceiverServer(settings, app)  # loads receiver.gunicorn_config
    from receiver.gunicorn_config import SERVE_WORKER_CLASS, WORKER_CLASS

    cfg = server.cfg
    if cfg.worker_class_str == WORKER_CLASS:  # the default: gevent cannot patch this process
        cfg.set("worker_class", SERVE_WORKER_CLASS)
    worker_class = cfg.worker_class
    if not issubclass(worker_class, ThreadWorker):
        raise SystemExit(f"herald serve: the receiver runs in the serve process with a threaded worker; "
                         f"{cfg.worker_class_str} is not one (unset HERALD_WORKER_CLASS)")
    in_process = type("InProcess" + worker_class.__name__, (_InProcessWorker, worker_class), {})
    logger = _PropagatingLogger(cfg)
    sockets = gsock.create_sockets(cfg, logger)
    try:
        worker = in_process(0, os.getppid(), sockets, server, cfg.timeout / 2.0, cfg, logger)
        host, port = sockets[0].sock.getsockname()[:2]
        if cfg.workers > 1:
            log.info("herald serve: one receiver worker in this process (%d threads); "
                     "WEB_CONCURRENCY applies to `herald receiver` and `web`", cfg.threads)
        log.info("receiver listening on http://%s:%d", host, port)

        def watch_stop() -> None:
            stop.wait()
            worker.handle_exit(None, None)

        threading.Thread(target=watch_stop, name="receiver-stop", daemon=True).start()
        worker.init_process()  # runs until told to stop
    finally:
        stop.set()
        for listener in sockets:  # the worker closes them when it stops; not when it failed
            if getattr(listener, "sock", None) is not None:
                listener.close()


class _InProcessWorker:
    """What changes when a worker runs in the process that made it, with no arbiter."""

    def is_parent_alive(self) -> bool:
        return True  # there is no arbiter to lose: this process is the server

    def handle_exit(self, sig: Any, frame: Any) -> None:
        if self.alive and sig is not None:  # type: ignore[attr-defined]
            log.info("received %s, shutting down", signal.Signals(sig).name)
        super().handle_exit(sig, frame)  # type: ignore[misc]

    def init_signals(self) -> None:
        super().init_signals()  # type: ignore[misc]
        # Ctrl-C stops gracefully, like SIGTERM (a worker's SIGINT is an arbiter's quick stop).
        signal.signal(signal.SIGINT, self.handle_exit)  # type: ignore[attr-defined]
