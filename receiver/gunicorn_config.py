"""gunicorn's settings for the receiver, the same for every way it is started.

- `web` (Procfile) and a bare `gunicorn 'receiver.app:create_app()'` in the repository:
  gunicorn reads ./gunicorn.conf.py by itself, which imports this module;
- anywhere else: `gunicorn -c python:receiver.gunicorn_config 'receiver.app:create_app()'`;
- `herald receiver` and `herald serve` load this module themselves (receiver.server).

Every value can be changed without editing this file:

- HERALD_* variables below (HERALD_LISTEN / PORT, HERALD_THREADS, HERALD_READ_TIMEOUT, ...);
- WEB_CONCURRENCY: the number of worker processes (the Procfile platforms' convention);
- GUNICORN_CMD_ARGS, or flags on the command line: they override this file.

Why these values (measured with bench/receiver_vs_webhook.py, see bench/RESULTS.md):

- worker class: gunicorn's gevent worker, through receiver.gevent_worker, which adds a read
  deadline per request and the receiver's JSON answers to refused requests. A webhook is a
  little Python around a long wait for the broker's publisher confirm; in one OS thread per
  worker, a request that waits yields to the next at no cost, where gunicorn's threaded worker
  handed the GIL between threads on every wait (half the requests per second, twice the p99,
  measured). A waiting (slow) client holds a greenlet, not a thread: `worker_connections` of
  them per worker. `herald serve` runs receiver.gunicorn_worker's threaded worker instead
  (`threads` applies there), as gevent would monkeypatch its reconciler and notifier too.
- workers: one per CPU core. The GIL lets a process run Python on one core at a time, so
  fewer leaves cores idle; more only adds publishing connections and memory.
- threads (`herald serve`'s threaded worker): enough requests in flight to fill a confirm
  batch while others run Python; beyond that, threads only queue for the GIL.
- no preload: each worker opens its broker connection and starts its I/O threads after the
  fork, in the process that uses them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from herald import envcheck

# A bad HERALD_* value is one line naming it, before gunicorn starts anything.
_problems = envcheck.problems(os.environ)
for _problem in _problems:
    print(f"herald: {_problem}", file=sys.stderr)
if _problems:
    raise SystemExit(2)


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _cpus() -> int:
    """CPUs this process may use: its affinity, and its container's CPU quota (cgroup v2/v1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                                     "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            with open(quota_file) as f:
                fields = f.read().split()
            if period_file is not None:
                with open(period_file) as f:
                    fields.append(f.read().strip())
            quota, period = fields[0], fields[1]
            if quota not in ("max", "-1"):
                cpus = min(cpus, -(-int(quota) // int(period)))  # rounded up
            break
        except (OSError, ValueError, IndexError):
            continue
    return max(1, cpus)


def _bind() -> str:
    if os.environ.get("HERALD_LISTEN"):
        return os.environ["HERALD_LISTEN"]
    if os.environ.get("PORT"):  # Procfile platforms hand out the port
        return f"0.0.0.0:{os.environ['PORT']}"
    return "127.0.0.1:9292"


wsgi_app = "receiver.app:create_app()"
bind = [_bind()]

WORKER_CLASS = "receiver.gevent_worker.HeraldGeventWorker"
# `herald serve` cannot monkeypatch the process its reconciler and notifier run in (receiver.server).
SERVE_WORKER_CLASS = "receiver.gunicorn_worker.HeraldThreadWorker"
worker_class = os.environ.get("HERALD_WORKER_CLASS", WORKER_CLASS)
# Capped: every worker holds its own broker connections and tails the delivery log.
workers = _int("WEB_CONCURRENCY", _int("HERALD_WORKERS", min(_cpus(), 8)))
threads = _int("HERALD_THREADS", 16)
# Connections a worker holds at once (being served or kept alive).
worker_connections = _int("HERALD_WORKER_CONNECTIONS", 1000)

# A worker that does not report to the arbiter for this long is killed and replaced.
timeout = _int("HERALD_WORKER_TIMEOUT", 30)
# On SIGTERM, requests in flight get this long to finish (a publish gives up after ~11 s:
# connecting, then the confirm); below the 30 s most platforms allow before SIGKILL.
graceful_timeout = _int("HERALD_GRACEFUL_TIMEOUT", 25)
# Seconds an idle kept-alive connection stays open. Behind a load balancer that reuses
# connections, set it above the balancer's idle timeout (e.g. 75 for a 60 s ALB/nginx).
keepalive = _int("HERALD_KEEPALIVE", 5)
# HERALD_READ_TIMEOUT (default 10), read by receiver.gunicorn_worker: the request line,
# headers and body must arrive within this many seconds of the connection's accept (or, on a
# kept-alive connection, of the next request's first byte), or the client is disconnected
# (slow clients, slowloris). 0 turns the deadline off.

# Request limits. Hook URLs are short and Git hosts send a dozen or two headers; a large
# field is allowed for senders that put long tokens or signatures in headers.
# The access log is one JSON object per request on stdout, as log collectors read it. It is off
# unless HERALD_ACCESS_LOG=true: every answer is already logged by Herald in its own words, and
# a webhook's path is its secret (a digest, but still worth not spreading).
accesslog = "-" if os.environ.get("HERALD_ACCESS_LOG", "").lower() in ("1", "true", "yes") else None
# Only atoms that cannot hold a quote (no user agent, no path), so every line stays valid JSON.
access_log_format = (
    '{"time": "%(t)s", "remote": "%(h)s", "method": "%(m)s", "status": %(s)s, '
    '"bytes": %(B)s, "duration_us": %(D)s}'
)

limit_request_line = _int("HERALD_LIMIT_REQUEST_LINE", 4094)
limit_request_fields = _int("HERALD_LIMIT_REQUEST_FIELDS", 100)
limit_request_field_size = _int("HERALD_LIMIT_REQUEST_FIELD_SIZE", 16384)

# The heartbeat file every worker touches: in memory, never on a slow or full disk.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"


# /metrics sums every worker's counters (receiver.app does so when PROMETHEUS_MULTIPROC_DIR
# is set): a scrape reaches one worker at random. The directory must start empty, so each
# server start makes its own, unless one is given.
_metrics_dir_made = ""


def on_starting(server):  # noqa: ANN001, ANN201 - gunicorn hook
    global _metrics_dir_made
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _metrics_dir_made = tempfile.mkdtemp(prefix="herald-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir_made


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn hook
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ANN001, ANN201 - gunicorn hook
    if _metrics_dir_made:
        shutil.rmtree(_metrics_dir_made, ignore_errors=True)


def worker_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn hook
    """Close the worker's broker connections politely instead of dropping them."""
    herald = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("herald", {})
    for name in ("bus", "deliveries"):
        closing = getattr(herald.get(name), "close", None)
        if closing is not None:
            try:
                closing()
            except Exception:  # noqa: BLE001 - exiting anyway
                server.log.exception("closing the %s on worker exit", name)
