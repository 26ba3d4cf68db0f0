"""The receiver's Prometheus metrics (module level: one registration per process)."""

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "herald_receiver_deliveries_total",
    "Webhook deliveries by Receiver type and HTTP status answered.",
    ["type", "code"],
)
PUBLISHED = Counter(
    "herald_receiver_requests_published_total",
    "Reconcile requests published and confirmed by the bus.",
)
PUBLISH_SECONDS = Histogram(
    "herald_receiver_publish_seconds",
    "Time from receiving a delivery to the bus confirming its requests.",
)
