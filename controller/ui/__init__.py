"""The web UI: the single-page app in ``static/`` and the routes that serve it and its session.

Mounted by the controller (``tickrun.controller.app``, through :mod:`.routes`) behind its auth,
and by ``tickrun ui`` (:mod:`.local`) on a local runs store. The endpoints the pages call are
listed in API.md. Nothing is imported here: ``tickrun --help`` loads :mod:`.cli` only.
"""
