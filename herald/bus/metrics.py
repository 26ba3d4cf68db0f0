"""What every bus reports, whichever carries the messages: how long messages waited, how each
handling ended, and what was dead-lettered (the number an operator should alert on)."""

from prometheus_client import Counter, Histogram

QUEUE_LAG = Histogram(
    "herald_queue_lag_seconds",
    "Time from a message's publication to the start of its handling (retries include their delay).",
    ["queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
HANDLED = Counter(
    "herald_messages_handled_total",
    "Messages handled, by outcome: ok, retry (a later attempt follows) or dead (dead-lettered).",
    ["queue", "outcome"],
)
DEAD_LETTERED = Counter(
    "herald_dead_lettered_total",
    "Messages moved to <queue>.dead: rejected, or out of attempts or retry budget.",
    ["queue"],
)
