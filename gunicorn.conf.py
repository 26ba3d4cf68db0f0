"""gunicorn reads ./gunicorn.conf.py by itself: `web` in the Procfile, and a bare
`gunicorn 'receiver.app:create_app()'` run here, get the receiver's settings, which live in
receiver/gunicorn_config.py so that `herald serve`, `herald receiver` and an installed
package share them."""

from receiver.gunicorn_config import *  # noqa: F403
