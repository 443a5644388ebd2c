"""The kubernetes platform: ``manifests.py`` (a function's objects, pure) and ``platform.py``
(``KubernetesPlatform``, over the official client). Import ``platform`` only when the platform
is configured: the client library is large."""
