"""Loading a user's ``module:entrypoint`` handler and its optional ``init_context``."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HandlerLoadError, InitContextError
from .modules import import_from


@dataclass(frozen=True, slots=True)
class LoadedHandler:
    fn: Callable[..., Any]
    is_async: bool
    init_context: Callable[..., Any] | None
    module_name: str
    entrypoint: str

    def run_init_context(self, context: Any) -> Any:
        """Call ``init_context``; a coroutine it returns is handed back for the caller to await."""
        if self.init_context is None:
            return None
        try:
            return self.init_context(context)
        except Exception as exc:
            raise InitContextError(
                f"init_context of {self.module_name} raised {type(exc).__name__}: {exc}"
            ) from exc


def _last_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" ({Path(f.filename).name}, line {f.lineno})"


def load_handler(function_dir: str | Path, handler: str) -> LoadedHandler:
    """Import ``handler`` (``module:entrypoint``) with ``function_dir`` first on ``sys.path``."""
    directory = Path(function_dir).resolve()
    module_name, _, entrypoint = handler.partition(":")
    entrypoint = entrypoint or "handler"
    if not directory.is_dir():
        raise HandlerLoadError(f"function directory {directory} does not exist")
    try:
        module = import_from(directory, module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name.split(".")[0]:
            raise HandlerLoadError(
                f"handler module {module_name!r} not found in {directory} "
                f"(expected {module_name.replace('.', '/')}.py)"
            ) from exc
        raise HandlerLoadError(
            f"handler module {module_name!r} imports {exc.name!r}, which is not installed; "
            "add it to spec.requirements"
        ) from exc
    except SyntaxError as exc:
        where = Path(exc.filename or module_name).name
        raise HandlerLoadError(f"syntax error in {where}, line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise HandlerLoadError(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc}{_last_frame(exc)}"
        ) from exc
    fn = getattr(module, entrypoint, None)
    if fn is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise HandlerLoadError(
            f"module {module_name!r} has no entrypoint {entrypoint!r} "
            f"(callables found: {', '.join(found) or 'none'})"
        )
    if not callable(fn):
        raise HandlerLoadError(f"{module_name}:{entrypoint} is not callable")
    init = getattr(module, "init_context", None)
    if init is not None and not callable(init):
        init = None
    return LoadedHandler(
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        init_context=init,
        module_name=module_name,
        entrypoint=entrypoint,
    )
