"""The table of provider types: one module each, as in Flux's notification-controller."""

from notifier.providers import (
    bitbucket,
    bitbucketserver,
    discord,
    email,
    generic,
    gitea,
    github,
    gitlab,
    msteams,
    slack,
)
from notifier.providers.base import DeliveryError, Notification, SendFn

PROVIDERS: dict[str, SendFn] = {
    "slack": slack.send,
    "github": github.send,
    "gitlab": gitlab.send,
    "gitea": gitea.send,
    "bitbucket": bitbucket.send,
    "bitbucketserver": bitbucketserver.send,
    "msteams": msteams.send,
    "discord": discord.send,
    "email": email.send,
    "generic": generic.send,
    "generic-hmac": generic.send_hmac,
}

COMMIT_STATUS_TYPES = frozenset({"github", "gitlab", "gitea", "bitbucket", "bitbucketserver"})
"""Providers that post a verdict on a commit rather than a message (see routing.wants)."""
THREADED_TYPES = frozenset({"slack", "generic", "generic-hmac"})
"""Providers that take Progressing events: Slack threads them, generic receivers are machines."""


def kind_of(provider_type: str) -> str:
    """The provider's kind for notifier.routing.wants."""
    if provider_type in COMMIT_STATUS_TYPES:
        return "commit-status"
    return "threaded" if provider_type in THREADED_TYPES else "message"

__all__ = ["COMMIT_STATUS_TYPES", "PROVIDERS", "THREADED_TYPES", "DeliveryError", "Notification", "SendFn", "kind_of"]
