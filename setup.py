"""Maps the repo's top-level folders onto sub-packages of ``tickrun``.

pyproject.toml cannot list packages found under a remapped directory, so the list is computed
here: every folder below a mapped root (namespace folders included, so hub items and examples
that carry only YAML and data are packaged too).
"""

from __future__ import annotations

from setuptools import find_namespace_packages, setup

ROOTS = {
    "tickrun": "tickrun",
    "tickrun.functions": "functions",
    "tickrun.triggers": "triggers",
    "tickrun.controller": "controller",
    "tickrun.hub": "hub",
}


def _packages() -> list[str]:
    found: list[str] = []
    for package, folder in ROOTS.items():
        found.append(package)
        for sub in find_namespace_packages(where=folder, exclude=["*__pycache__*"]):
            found.append(f"{package}.{sub}")
    return found


setup(packages=_packages(), package_dir=ROOTS)
