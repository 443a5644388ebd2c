"""HAProxy as the controller's public front for /fn/ (see front.py, config.py, routes.py)."""
