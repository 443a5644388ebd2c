"""The web UI: the single-page app in ``static/`` and the routes that serve it and its session.

Mounted by the controller (``tickrun.controller.app``) behind its auth, and by ``tickrun ui``
(:mod:`.local`) on a local runs store. The endpoints the pages call are listed in API.md.
"""

from __future__ import annotations

from .routes import UI_KEY, CsrfError, UiConfig, cookie_auth, is_open, local_csrf_check, mount

__all__ = ["UI_KEY", "CsrfError", "UiConfig", "cookie_auth", "is_open", "local_csrf_check", "mount"]
