"""The table of receiver types: one module each, as in Flux's notification-controller.

A Receiver's `spec.type` picks its row; nothing else (no header sniffing) decides how a
delivery is verified, because Gitea and others also send GitHub's headers.
"""

from receiver.types import (
    acr,
    bitbucket,
    bitbucketserver,
    cloudevents,
    dockerhub,
    generic,
    generic_hmac,
    ghcr,
    gitea,
    github,
    gitlab,
    harbor,
    nexus,
    quay,
)
from receiver.types.base import (
    BadDelivery,
    Hook,
    Keys,
    PullRequest,
    ReceiverType,
    RefChange,
)

TYPES: dict[str, ReceiverType] = {
    t.name: t
    for t in (
        github.TYPE,
        gitlab.TYPE,
        bitbucket.TYPE,
        bitbucketserver.TYPE,
        gitea.TYPE,
        gitea.FORGEJO,
        gitea.GOGS,
        dockerhub.TYPE,
        quay.TYPE,
        harbor.TYPE,
        ghcr.TYPE,
        acr.TYPE,
        nexus.TYPE,
        generic.TYPE,
        generic_hmac.TYPE,
        cloudevents.TYPE,
        cloudevents.CDEVENTS,
    )
}

__all__ = ["TYPES", "BadDelivery", "Hook", "Keys", "PullRequest", "ReceiverType", "RefChange"]
