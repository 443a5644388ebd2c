"""``tickrun hub list|show|index|pull|pins``: browse and manage hub items from the shell."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tickrun.functions import settings


def register(sub: Any, get: Any) -> None:
    hub = sub.add_parser(
        "hub",
        help="browse the function hub (hub://…)",
        description="List, inspect and cache hub items.",
    )
    verbs = hub.add_subparsers(dest="hub_command", metavar="VERB")
    verbs.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--hub-path",
        action="append",
        default=None,
        help=f"private hub folder (repeatable; default ${settings.HUB_PATH.name})",
    )
    common.add_argument(
        "--hub-url",
        default=None,
        help=f"remote hub, e.g. https://controller:8070 (default ${settings.HUB_URL.name}; plain "
        f"http needs {settings.HUB_ALLOW_HTTP.name}=1)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")

    p = verbs.add_parser("list", parents=[common], help="list items and their versions")
    p.set_defaults(func=_list)
    p = verbs.add_parser(
        "show", parents=[common], help="show an item: versions, handlers, parameters, requirements"
    )
    p.add_argument("name", help="NAME, NAME:VERSION or hub://NAME[:VERSION]")
    p.set_defaults(func=_show)
    p = verbs.add_parser(
        "pull", parents=[common], help="resolve an item now and cache it for offline use"
    )
    p.add_argument("uri", help="hub://NAME[:VERSION]")
    p.set_defaults(func=_pull)
    p = verbs.add_parser("index", help="(re)generate index.json for a hub folder")
    p.add_argument("directory", help="hub folder: NAME/VERSION/item.yaml + code")
    p.set_defaults(func=_index)
    p = verbs.add_parser(
        "pins",
        help="print a pin file trusting every item version in a hub folder "
        f"(for {settings.HUB_PINS.name})",
    )
    p.add_argument("directory", help="hub folder: NAME/VERSION/item.yaml + code")
    p.set_defaults(func=_pins)


def _hub(args: argparse.Namespace) -> Any:
    from .resolver import Hub

    overrides: dict[str, Any] = {}
    if args.hub_path:
        overrides["paths"] = args.hub_path
    if args.hub_url:
        overrides["url"] = args.hub_url
    return Hub.from_env(**overrides)


def _list(args: argparse.Namespace) -> int:
    rows = _hub(args).list_items()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [4])
    print(f"{'NAME':<{width}}  {'LATEST':<8} {'KIND':<8} {'VERSIONS':<20} DESCRIPTION")
    for r in rows:
        # A deprecated version is still listed (runs pinned to it must reproduce), marked "!".
        versions = ", ".join(v + ("!" if v in r["deprecated"] else "") for v in r["versions"])
        print(
            f"{r['name']:<{width}}  {r['latest']:<8} {r['kind']:<8} {versions:<20} "
            f"{r['description']}"
        )
    if any(r["deprecated"] for r in rows):
        print("\n! deprecated (tickrun hub show NAME:VERSION says why)")
    return 0


def _show(args: argparse.Namespace) -> int:
    hub = _hub(args)
    fn = hub.import_function(args.name)
    spec = fn.spec
    versions = [str(v) for v in hub.versions(spec.name)]
    if args.json:
        out = spec.model_dump(mode="json", by_alias=True)
        out["versions"] = versions
        out["source"] = fn.resolved.source
        out["path"] = str(fn.folder)
        out["deprecated"] = fn.resolved.deprecated
        print(json.dumps(out, indent=2))
        return 0
    print(f"{spec.name} {spec.version}  ({spec.kind}; from {fn.resolved.source})")
    print(f"  {spec.description}")
    if fn.resolved.deprecated:
        print(f"  DEPRECATED: {fn.resolved.deprecated}")
    print(f"  versions: {', '.join(versions)}")
    if spec.categories:
        print(f"  categories: {', '.join(spec.categories)}")
    if spec.requirements:
        print(f"  requirements: {', '.join(spec.requirements)}")
    for name, handler in spec.handlers.items():
        default = " (default)" if name == spec.default_handler else ""
        print(f"\n  handler {name}{default}: {handler.doc}")
        for param in handler.parameters:
            kind = "input" if param.input else param.type
            value = "required" if param.required else f"default {param.default!r}"
            print(f"    {param.name:<24} {kind:<10} {value}")
            if param.doc:
                print(f"      {param.doc}")
        if handler.outputs:
            print(f"    outputs: {', '.join(handler.outputs)}")
    if spec.serving is not None:
        print(f"\n  serving: handler {spec.serving.handler}")
        for env in spec.serving.env:
            print(f"    env {env.name}{' (required)' if env.required else ''}: {env.doc}")
    print(f"\n  use: tickrun.import_function({f'hub://{spec.name}:{spec.version}'!r})")
    return 0


def _pull(args: argparse.Namespace) -> int:
    fn = _hub(args).import_function(args.uri)
    if args.json:
        print(json.dumps({"uri": fn.uri, "source": fn.resolved.source, "path": str(fn.folder)}))
    else:
        print(f"{fn.uri} from {fn.resolved.source} → {fn.folder}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from .catalogue import write_index

    path = write_index(Path(args.directory))
    print(path)
    return 0


def _pins(args: argparse.Namespace) -> int:
    from .pins import pin_lines

    print(f"# tickrun hub pins for {Path(args.directory).resolve()}")
    for line in pin_lines(Path(args.directory)):
        print(line)
    return 0
