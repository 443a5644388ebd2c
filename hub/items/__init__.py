"""The bundled hub catalogue: <name>/<version>/item.yaml + code."""
