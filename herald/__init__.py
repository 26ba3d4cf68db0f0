"""Herald: webhook-driven GitOps companion."""
