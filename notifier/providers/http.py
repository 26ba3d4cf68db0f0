"""HTTP for providers: one place for timeouts, proxies, custom CAs and reading failures.

The helpers live in the core (`herald.http`) so that clients outside the notifier (the forges'
pull-request comments, `herald.forges`) share them without importing the notifier; this module
keeps the names every provider imports.
"""

from herald.http import (  # noqa: F401 (re-exported)
    _MAX_DETAIL,
    RETRYABLE_STATUS,
    USER_AGENT,
    DeliveryError,
    _CAAdapter,
    _reason,
    _secrets,
    error_detail,
    failure,
    host,
    retry_after,
    scrub,
    send,
    session,
)
