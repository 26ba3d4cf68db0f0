"""Image names as Flux's ImageRepository `spec.image` takes them, and where their registry answers.

Pure (no I/O), so a reconciler can refuse a bad `spec.image` before anything is asked of a
registry, and so two spellings of one repository (`nginx`, `docker.io/library/nginx`,
`index.docker.io/library/nginx`) compare equal: a scan's results and a policy's latest image
are keyed by the canonical name.

`spec.image` names a repository, not an image: no scheme, no tag, no digest. The refusals use
image-reflector-controller's own words, so a message reads the same whichever controller
reconciled the object. The grammar is the distribution reference grammar that Docker and
containerd use: a first component is a registry host only when it holds a `.` or a `:` or is
`localhost` (`acme/app` is Docker Hub's `acme/app`, not a host named acme).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
"""The canonical name of Docker Hub; the other spellings of it are folded into this one."""

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API = "https://registry-1.docker.io"
"""Docker Hub serves the registry API on a host of its own, not on docker.io."""

MAX_NAME_LENGTH = 255  # the distribution spec's limit on registry + "/" + repository

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?")


class ImageNameError(ValueError):
    """`spec.image` is not a repository name; the message says what to change."""


@dataclass(frozen=True)
class ImageName:
    """A repository in a registry: `registry` is a host (with its port, if any), canonical."""

    registry: str
    repository: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}"


def parse_image(text: str) -> ImageName:
    """The canonical ImageName for `spec.image`, or ImageNameError saying why it is not one."""
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ImageNameError(f"image '{text}' should not include URL scheme; remove '{scheme}://'")
    if not text:
        raise ImageNameError("image must not be empty")
    if text != text.strip() or any(c.isspace() for c in text):
        raise ImageNameError(f"image '{text}' must not contain whitespace")
    if "@" in text:
        raise ImageNameError(f"image '{text}' should not include a digest; remove '@{text.split('@', 1)[1]}'")

    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first.lower(), rest
        if not _HOST.fullmatch(host):
            raise ImageNameError(f"image '{text}': '{first}' is not a registry host")
    else:
        host, path = DOCKER_HUB, text

    if ":" in path:  # what is left after the host can hold a colon only as a tag separator
        raise ImageNameError(f"image '{text}' should not include a tag; remove ':{path.split(':', 1)[1]}'")
    if path.lower() != path:
        raise ImageNameError(f"image '{text}': repository name must be lowercase")
    if not _REPOSITORY.fullmatch(path):
        raise ImageNameError(
            f"image '{text}': '{path}' is not a repository name (lowercase letters, digits and "
            "separators '.', '_', '__', '-' between them, in '/'-separated components)")

    if host in DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"  # Docker Hub's official images live under library/
    name = ImageName(host, path)
    if len(str(name)) > MAX_NAME_LENGTH:
        raise ImageNameError(f"image '{text}': repository name must not be more than {MAX_NAME_LENGTH} characters")
    return name


def api_base(name: ImageName, insecure: bool = False) -> str:
    """Where `name`'s registry serves the /v2/ API: https, or plain http when `insecure`."""
    if name.registry == DOCKER_HUB:
        return DOCKER_HUB_API
    return f"{'http' if insecure else 'https'}://{name.registry}"
