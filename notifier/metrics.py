"""The notifier's Prometheus metrics. `provider` is a configured Provider's namespace/name."""

from prometheus_client import Counter, Histogram

NOTIFICATIONS = Counter(
    "herald_notifications_total",
    "Deliveries to providers by result: delivered, retry, refused (dead-lettered at once), "
    "duplicate (sent before within the dedupe window), suspended.",
    ["type", "provider", "result"],
)
SEND_SECONDS = Histogram(
    "herald_notification_send_seconds",
    "Time a provider took to accept (or refuse) one notification.",
    ["type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
