"""GitHub App authentication lives in the core, `herald.forges.github_app`, shared with the
pull-request comment client; this name stays the same module (not a copy), so its token cache
and anything a test patches are one."""

import sys

from herald.forges import github_app as _github_app

sys.modules[__name__] = _github_app
