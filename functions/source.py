"""Finding a function's code and spec from what a user points at (a folder or a .py file)."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import SpecError
from .spec import FunctionSpec, default_spec, load_spec

SPEC_FILES = ("function.yaml", "function.yml")


def sanitize_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "function"


def resolve_function(
    path: str | Path, spec_path: str | Path | None = None
) -> tuple[Path, FunctionSpec]:
    """(code directory, spec) for ``tickrun serve PATH|FILE [--spec function.yaml]``."""
    target = Path(path).expanduser()
    if not target.exists():
        raise SpecError(f"{target} does not exist")
    if target.is_file():
        if target.suffix in (".yaml", ".yml") and spec_path is None:
            return target.parent.resolve(), load_spec(target)
        if target.suffix != ".py":
            raise SpecError(f"{target} is neither a folder, a .py file nor a function.yaml")
        directory = target.parent.resolve()
        if spec_path is not None:
            spec = load_spec(spec_path)
        else:
            spec = default_spec(sanitize_name(target.stem), f"{target.stem}:handler")
            for name in SPEC_FILES:
                candidate = directory / name
                if candidate.exists():
                    found = load_spec(candidate)
                    if found.spec.handler_module == target.stem:
                        spec = found
                    break
        if spec.spec.handler_module != target.stem:
            spec.spec.handler = f"{target.stem}:{spec.spec.handler_entrypoint}"
        return directory, spec
    directory = target.resolve()
    if spec_path is not None:
        return directory, load_spec(spec_path)
    for name in SPEC_FILES:
        if (directory / name).exists():
            return directory, load_spec(directory / name)
    return directory, default_spec(sanitize_name(directory.name))
