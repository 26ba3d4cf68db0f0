"""The reconciler's Prometheus metrics. Labels name configured Kustomizations (bounded by the
configuration) and Flux's reasons, never anything from a webhook."""

from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "herald_reconciles_total",
    "Kustomization reconciles by outcome (Flux's reason: ReconciliationSucceeded, ReconciliationFailed, ...).",
    ["namespace", "name", "reason"],
)
RECONCILE_SECONDS = Histogram(
    "herald_reconcile_duration_seconds",
    "Time to reconcile one Kustomization (render, dry-run, apply, prune, health), by outcome.",
    ["reason"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
