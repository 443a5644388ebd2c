"""Loading a job handler from ``"path/to/file.py:fn"`` or ``"pkg.module:fn"`` and calling it
with parameters and inputs injected by name (``def train(context, lr=0.1, data=None)``)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import HandlerLoadError
from ..modules import import_file


def load_callable(ref: str) -> Callable[..., Any]:
    """Import the function named by ``ref`` (``file.py:fn`` or ``module:fn``)."""
    target, _, fn_name = ref.rpartition(":")
    if not target or not fn_name:
        raise HandlerLoadError(f"handler {ref!r} must look like path/to/file.py:fn or module:fn")
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise HandlerLoadError(f"handler file {path} does not exist")
        mod_name = "tickrun_job_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]  # noqa: S324
        try:
            # Sibling imports of the job file (helpers next to it) work as in a script.
            module = import_file(path, mod_name, siblings=True)
        except HandlerLoadError:
            raise
        except Exception as exc:
            raise HandlerLoadError(
                f"importing {path.name} raised {type(exc).__name__}: {exc}"
            ) from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise HandlerLoadError(
                f"cannot import handler module {target!r}: {type(exc).__name__}: {exc}"
            ) from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise HandlerLoadError(f"{target} has no function {fn_name!r}")
    return fn  # type: ignore[no-any-return]


def handler_ref(fn: Callable[..., Any]) -> str | None:
    """A ``file.py:fn`` reference another process can load, or None for lambdas/closures."""
    name = getattr(fn, "__qualname__", "")
    if not name or "." in name or "<" in name:
        return None
    try:
        src = inspect.getsourcefile(fn)
    except TypeError:
        return None
    return f"{src}:{name}" if src and src.endswith(".py") else None


def handler_name(handler: str | Callable[..., Any]) -> str:
    if isinstance(handler, str):
        target, _, fn = handler.rpartition(":")
        return f"{Path(target).stem}-{fn}" if target.endswith(".py") else handler.replace(":", "-")
    return str(getattr(handler, "__name__", "job"))


def _coerce(value: Any, param: inspect.Parameter) -> Any:
    """CLI values arrive as text: convert to the type of the parameter's default."""
    if not isinstance(value, str):
        return value
    default = param.default
    kind = default if default is not inspect.Parameter.empty and default is not None else None
    try:
        if isinstance(kind, bool):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(kind, int):
            return int(value)
        if isinstance(kind, float):
            return float(value)
    except ValueError:
        return value
    return value


def call_handler(
    fn: Callable[..., Any],
    context: Any,
    params: Mapping[str, Any],
    inputs: Mapping[str, Any],
) -> Any:
    """Call ``fn(context, **matching params and inputs)``; ``**kwargs`` takes all of them."""
    sig = inspect.signature(fn)
    plist = list(sig.parameters.values())
    if not plist:
        raise HandlerLoadError(f"handler {getattr(fn, '__name__', fn)} must accept a context")
    kwargs: dict[str, Any] = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in plist)
    named = {
        p.name: p
        for p in plist[1:]
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    for name, p in named.items():
        if name in inputs:
            kwargs[name] = inputs[name]
        elif name in params:
            kwargs[name] = _coerce(params[name], p)
    if takes_all:
        for k, v in {**params, **inputs}.items():
            kwargs.setdefault(k, v)
    out = fn(context, **kwargs)
    if inspect.isawaitable(out):
        import asyncio  # here: most jobs are sync, and asyncio is ~10 ms of a job's start-up
        import concurrent.futures

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_await(out))
        # Called from inside an event loop (a notebook, an async app): run it on its own loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _await(out)).result()
    return out


async def _await(aw: Any) -> Any:
    return await aw
