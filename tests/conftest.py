"""Test plumbing: real parts (RabbitMQ, git, a Kubernetes API server, a Slack API server)."""

pytest_plugins = [
    "tests.fixtures_rabbitmq",
    "tests.fixtures_kube",
    "tests.fixtures_slack",
    "tests.fixtures_herald",
]
