"""Clients of the forges' pull-request comment APIs, one module per forge, as the notifier's
commit-status providers are (and sharing their address parsing, credentials and HTTP).

`client(provider, secret)` makes the right one for a Provider's `type`; each offers
`upsert_comment(pr, body) -> CommentRef` (see `base`), and `fit.fit` cuts a Markdown body to a
forge's limit (`LIMITS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from herald.forges import bitbucket, bitbucketserver, gitea, github, gitlab
from herald.forges.base import LINK_MARKER, MARKER, Comment, CommentClient, CommentRef
from herald.forges.fit import fit
from herald.http import DeliveryError
from herald.model import Provider

FORGES: dict[str, type[CommentClient]] = {
    "github": github.GitHubComments,
    "gitlab": gitlab.GitLabComments,
    "gitea": gitea.GiteaComments,
    "bitbucket": bitbucket.BitbucketComments,
    "bitbucketserver": bitbucketserver.BitbucketServerComments,
}

LIMITS: dict[str, int] = {name: cls.limit for name, cls in FORGES.items()}
"""Each forge's longest comment body, in characters."""


def client(provider: Provider, secret: Mapping[str, str], **options: Any) -> CommentClient:
    """The comment client for the Provider's type; DeliveryError (final) for other types."""
    cls = FORGES.get(provider.type)
    if cls is None:
        raise DeliveryError(f"{provider.type}: not a forge with pull-request comments "
                            f"(one of {', '.join(sorted(FORGES))})", retryable=False)
    return cls(provider, secret, **options)


__all__ = ["FORGES", "LIMITS", "LINK_MARKER", "MARKER", "Comment", "CommentClient", "CommentRef", "client", "fit"]
