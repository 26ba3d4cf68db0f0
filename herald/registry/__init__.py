"""A client of OCI/Docker registries for image automation: image names as Flux's
ImageRepository `spec.image` takes them, credentials from a dockerconfigjson Secret, and the
two reads a scan needs (a repository's tags, a tag's digest).

Core: the receiver, reconciler and notifier may use it; it imports none of them.
"""

from herald.registry.client import RegistryClient
from herald.registry.credentials import Credentials, CredentialsError, credentials_for, parse_dockerconfigjson
from herald.registry.errors import RegistryError
from herald.registry.names import ImageName, ImageNameError, api_base, parse_image

__all__ = [
    "Credentials",
    "CredentialsError",
    "ImageName",
    "ImageNameError",
    "RegistryClient",
    "RegistryError",
    "api_base",
    "credentials_for",
    "parse_dockerconfigjson",
    "parse_image",
]
