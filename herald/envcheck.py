"""Every environment variable Herald reads, and what each accepts, checked before anything runs.

The components read their own settings where they use them (the worker its lease and
threads, gunicorn's configuration its limits, ...). A bad value used to surface there, as a
traceback that did not name the variable, and in every command, `herald --help` included.
This table is checked once, first, by the `herald` command and by gunicorn's configuration,
so a bad value is one line naming the variable, the value and what is accepted, and exit 2.

tests/test_settings.py keeps the table and the code in step: every HERALD_* variable the
code reads is here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from herald.schema import parse_duration

FLAG_WORDS = ("1", "true", "yes", "on", "0", "false", "no", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class BadSetting(ValueError):
    """One variable or flag with a value Herald cannot use; str() is the line to print."""


@dataclass(frozen=True)
class Rule:
    accepts: str  # what is accepted, in words, for the error line
    check: Callable[[str], bool]
    secret: bool = False  # the value may hold a password: never printed


def _integer(low: int, high: int | None = None) -> Rule:
    def check(text: str) -> bool:
        try:
            value = int(text)
        except ValueError:
            return False
        return value >= low and (high is None or value <= high)

    words = f"an integer from {low} to {high}" if high is not None else f"an integer ≥ {low}"
    return Rule(words, check)


def _number(low: float) -> Rule:
    def check(text: str) -> bool:
        try:
            value = float(text)
        except ValueError:
            return False
        return value >= low and value == value and value != float("inf")

    return Rule(f"a number ≥ {low:g}", check)


def _duration(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError:
            return False
    return 0 <= value < float("inf")


def address_problem(text: str) -> str:
    """Why `text` is not a HOST:PORT to listen on ("" when it is one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return "expected HOST:PORT, e.g. 127.0.0.1:9292 or 0.0.0.0:8080"
    if not 0 <= int(port) <= 65535:
        return "the port must be from 0 to 65535"
    if host.startswith("[") != host.endswith("]"):
        return "an IPv6 host goes in brackets, e.g. [::1]:9292"
    return ""


FLAG = Rule("one of " + ", ".join(FLAG_WORDS), lambda text: text.lower() in FLAG_WORDS)
DURATION = Rule("seconds (30, 0.5) or a duration (90s, 5m, 1h30m)", _duration)
ADDRESS = Rule("HOST:PORT, e.g. 127.0.0.1:9292 or 0.0.0.0:8080", lambda text: not address_problem(text))
COUNT = _integer(1)
NON_NEGATIVE = _integer(0)
TEXT = Rule("any text", lambda text: True)
URL = Rule("an http:// or https:// URL", lambda text: text.startswith(("http://", "https://")) and "://" != text[-3:])

VARIABLES: dict[str, Rule] = {
    # every command
    "HERALD_CONFIG": TEXT,
    "HERALD_BROKER_URL": Rule("an amqp:// or amqps:// URL",
                              lambda text: text.startswith(("amqp://", "amqps://")), secret=True),
    "HERALD_STATE_DIR": TEXT,
    "HERALD_SECRETS_DIR": TEXT,
    "HERALD_LOG_LEVEL": Rule("one of " + ", ".join(LOG_LEVELS) + " (any case)",
                             lambda text: text.upper() in LOG_LEVELS),
    "HERALD_LOG_FORMAT": Rule("text or json", lambda text: text.strip().lower() in ("text", "json")),
    "HERALD_FROM_CLUSTER": FLAG,
    "HERALD_WATCH_NAMESPACE": TEXT,
    "HERALD_METRICS_LISTEN": ADDRESS,
    # the receiver
    "HERALD_LISTEN": ADDRESS,
    "PORT": _integer(0, 65535),
    "HERALD_MAX_BODY": Rule("a number of bytes ≥ 1", _integer(1).check),
    "HERALD_DEDUPE_WINDOW": DURATION,
    "HERALD_HISTORY_RETENTION": DURATION,
    "HERALD_OPERATOR_SECRET": Rule("the Secret's NAMESPACE/NAME (or NAME, in namespace default)",
                                   lambda text: bool(text.rpartition("/")[2]) and text.count("/") <= 1),
    "HERALD_PUBLIC_URL": URL,
    # the operator commands (herald get, reconcile, ...)
    "HERALD_SERVER": URL,
    "HERALD_TOKEN": Rule("the operator token", lambda text: True, secret=True),
    # gunicorn (receiver.gunicorn_config)
    "WEB_CONCURRENCY": COUNT,
    "HERALD_WORKERS": COUNT,
    "HERALD_THREADS": COUNT,
    "HERALD_WORKER_CONNECTIONS": COUNT,
    "HERALD_WORKER_TIMEOUT": NON_NEGATIVE,
    "HERALD_GRACEFUL_TIMEOUT": NON_NEGATIVE,
    "HERALD_KEEPALIVE": NON_NEGATIVE,
    "HERALD_READ_TIMEOUT": _number(0),
    "HERALD_ACCESS_LOG": FLAG,
    "HERALD_LIMIT_REQUEST_LINE": NON_NEGATIVE,
    "HERALD_LIMIT_REQUEST_FIELDS": NON_NEGATIVE,
    "HERALD_LIMIT_REQUEST_FIELD_SIZE": NON_NEGATIVE,
    "HERALD_WORKER_CLASS": TEXT,
    # the reconciler
    "HERALD_RECONCILE_THREADS": COUNT,
    "HERALD_LEASE_DURATION": DURATION,
    "HERALD_COALESCE_WINDOW": DURATION,
    "HERALD_CLOCK_SKEW": DURATION,
    "HERALD_INTERVAL_POLLING": FLAG,
    "HERALD_STARTUP_RECONCILE": FLAG,
    "HERALD_STARTUP_SPREAD": DURATION,
    "HERALD_POLL_JITTER": _number(0),
    "HERALD_DRY_RUN_UNCHANGED": FLAG,
    "HERALD_APPLY_CONCURRENCY": COUNT,
    "HERALD_PLAN_THREADS": COUNT,
    # the notifier
    "HERALD_NOTIFY_RETRY_BUDGET": DURATION,
    "HERALD_NOTIFY_FIRST_RETRY": DURATION,
    "HERALD_NOTIFY_MAX_RETRY_DELAY": DURATION,
    "HERALD_NOTIFY_DEDUPE_WINDOW": DURATION,
    "HERALD_NOTIFY_THREADS": COUNT,
}


def problems(env: Mapping[str, str]) -> list[str]:
    """One line per variable set to a value Herald cannot use. Unset and empty mean the default."""
    lines = []
    for name, rule in VARIABLES.items():
        value = env.get(name)
        if value is None or not value.strip():
            continue
        if not rule.check(value.strip()):
            shown = "(value not shown: it may hold a password)" if rule.secret else _shown(value)
            lines.append(f"{name}={shown}: expected {rule.accepts}")
    return lines


def check(env: Mapping[str, str]) -> None:
    """Raise BadSetting naming every variable with a bad value."""
    found = problems(env)
    if found:
        raise BadSetting("\n".join(found))


def _shown(value: str) -> str:
    value = value if len(value) <= 60 else value[:57] + "..."
    return repr(value) if not value.isprintable() or not value or " " in value else value
