"""Test plumbing: real parts (RabbitMQ, git, a Kubernetes API server, a Slack API server)."""

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
    "test_bus.py": 100, "test_front_door.py": 87, "test_receiver_fuzz.py": 82,
    "test_receiver_fuzz_registries.py": 81, "test_gunicorn.py": 60, "test_git_sources.py": 53,
    "test_concurrency.py": 52, "test_deploy.py": 51, "test_types_git.py": 49, "test_settings.py": 48,
    "test_status_page.py": 45, "test_notifier_delivery.py": 44, "test_slow_clients_serve.py": 40,
    "test_from_cluster.py": 39, "test_operator_cli_rabbitmq.py": 37, "test_slow_clients_web.py": 33,
    "test_receiver_scenarios.py": 31, "test_decrypt.py": 30, "test_image_worker.py": 24,
    "test_operator_cli.py": 22, "test_kubeapi.py": 22, "test_honest_runs.py": 21, "test_apply_engine.py": 20,
    "test_image_updates_end_to_end.py": 19, "test_plan_cli.py": 18, "test_pull_request_plans.py": 17,
    "test_receiver_outage.py": 17, "test_notifier_slack_threads.py": 16, "test_end_to_end.py": 16,
    "test_notifier_memory.py": 15, "test_dead_letter_actions.py": 14, "test_fleet.py": 14,
    "test_types_generic.py": 13,
}


def pytest_collection_modifyitems(items) -> None:  # noqa: ANN001 - pytest hook
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: a file's tests keep their order
