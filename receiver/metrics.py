"""The receiver's Prometheus metrics (module level: one registration per process).

Labels stay bounded: `receiver` is a configured Receiver's namespace/name (or "" for an
unknown path), never anything a sender controls.
"""

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "herald_receiver_requests_total",
    "Webhook deliveries by Receiver, type and HTTP status answered.",
    ["receiver", "type", "code"],
)
VERIFICATION_FAILURES = Counter(
    "herald_receiver_verification_failures_total",
    "Deliveries refused with 401: signature or token missing or wrong.",
    ["receiver", "type"],
)
DUPLICATES = Counter(
    "herald_receiver_duplicate_deliveries_total",
    "Deliveries answered as duplicates of one accepted before (not published again).",
    ["receiver", "type"],
)
PUBLISHED = Counter(
    "herald_receiver_requests_published_total",
    "Reconcile requests published and confirmed by the bus.",
    ["receiver", "type"],
)
PUBLISH_SECONDS = Histogram(
    "herald_receiver_publish_seconds",
    "Time from the start of a delivery to the bus confirming all its reconcile requests.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
