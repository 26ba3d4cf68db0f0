"""Test plumbing: real parts (RabbitMQ, git, a Kubernetes API server, a Slack API server)."""

from __future__ import annotations

import compileall
import types
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures_rabbitmq",
    "tests.fixtures_kube",
    "tests.fixtures_slack",
    "tests.fixtures_herald",
]

# Seconds each of the slowest test files took (setup, calls and teardown of all its tests) in a
# full run on 2 cores (`--junitxml`, summed per file). Files are handed to xdist's workers
# heaviest first (with --no-loadscope-reorder, see pyproject.toml), so that no worker is still
# on a long file while the others are done: xdist's own order is by number of tests, which
# sent the one-test, 40-second scenarios last. Only the order depends on this table; a file
# missing from it runs after the ones listed, in collection order.
FILE_SECONDS = {
    "test_bus.py": 70, "test_front_door.py": 87, "test_receiver_fuzz.py": 82,
    "test_receiver_fuzz_registries.py": 81, "test_gunicorn.py": 60, "test_gunicorn_threaded.py": 60, "test_git_sources.py": 53,
    "test_concurrency.py": 52, "test_deploy.py": 51, "test_types_git.py": 49, "test_settings.py": 48,
    "test_status_page.py": 45, "test_notifier_delivery.py": 44, "test_slow_clients_serve.py": 40,
    "test_from_cluster.py": 39, "test_operator_cli_rabbitmq.py": 37, "test_slow_clients_web.py": 33,
    "test_receiver_scenarios.py": 31, "test_decrypt.py": 30, "test_image_worker.py": 24,
    "test_operator_cli.py": 22, "test_kubeapi.py": 22, "test_honest_runs.py": 21, "test_apply_engine.py": 20,
    "test_image_updates_end_to_end.py": 19, "test_plan_cli.py": 18, "test_pull_request_plans.py": 17,
    "test_broker_outages.py": 55, "test_notifier_slack_threads.py": 16, "test_end_to_end.py": 16,
    "test_notifier_memory.py": 15, "test_dead_letter_actions.py": 14, "test_fleet.py": 14,
    "test_types_generic.py": 13,
}


def pytest_collection_modifyitems(items) -> None:  # noqa: ANN001 - pytest hook
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: a file's tests keep their order


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """In the xdist controller, before its workers start: compile Herald's modules and the
    tests once, into the caches Python and pytest read.

    Where PYTHONDONTWRITEBYTECODE is set (or the clone is fresh), every worker otherwise
    compiles and assertion-rewrites all ~100 test modules while collecting (about 4 s of CPU
    each, six at once on two cores), and every Herald process the tests start compiles Herald
    again (about 0.3 s each). The caches are `__pycache__` folders, which git ignores."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    root = Path(__file__).resolve().parent.parent
    for package in ("herald", "receiver", "reconciler", "notifier", "tests"):
        compileall.compile_dir(root / package, quiet=2)
    try:  # pytest's own cache of rewritten test modules: private API, so only ever a speed-up
        from _pytest.assertion.rewrite import PYC_TAIL, _read_pyc, _rewrite_test, _write_pyc, get_cache_dir
    except ImportError:
        return
    quiet = types.SimpleNamespace(trace=lambda *_: None)
    for source in sorted((root / "tests").glob("*.py")):
        if not (source.name.startswith(("test_", "fixtures_")) or source.name == "conftest.py"):
            continue
        try:
            cache = get_cache_dir(source)
            pyc = cache / (source.name[:-3] + PYC_TAIL)
            if _read_pyc(source, pyc) is not None:
                continue
            cache.mkdir(exist_ok=True)
            stat, code = _rewrite_test(source, config)
            _write_pyc(quiet, code, stat, pyc)
        except (OSError, SyntaxError):
            continue  # the worker rewrites it itself, and reports a syntax error properly
