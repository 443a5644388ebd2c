"""``tickrun models list|show|register|alias|delete``: the model registry from the shell.

Registered in the run DB the other run commands use (``TICKRUN_DB_URL``'s SQLite file, or the
controller's API when ``TICKRUN_CONTROLLER_URL`` is set). Imports nothing heavy at parse time.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from ..errors import BadRequestError

if TYPE_CHECKING:
    from .registry_records import ModelVersion


def register(sub: Any) -> None:
    m: argparse.ArgumentParser = sub.add_parser(
        "models",
        help="the model registry: models:/<name>/<version> and models:/<name>@<alias>",
        description="Registered models in the run DB: numbered versions of logged models, "
        "with aliases, tags and lineage.",
    )
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    p = msub.add_parser("list", help="registered models")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)

    p = msub.add_parser("show", help="a model's versions, or one version with its lineage")
    p.add_argument("model", help="NAME, or models:/NAME/VERSION | models:/NAME@ALIAS")
    p.add_argument("--version", help="a number, latest or an alias")
    p.add_argument("--tag", action="append", default=[], metavar="K=V", help="filter versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_show)

    p = msub.add_parser("register", help="register a logged model as the next version")
    p.add_argument("model_uri", help="store://project/uid[/iteration]/key (or models:/…)")
    p.add_argument("name")
    p.add_argument("--description", "-d", default=None)
    p.add_argument("--tag", action="append", default=[], metavar="K=V")
    p.add_argument("--alias", "-a", action="append", default=[], metavar="ALIAS")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_register)

    p = msub.add_parser("alias", help="point an alias at a version (or --delete it)")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", nargs="?", type=int)
    p.add_argument("--delete", action="store_true", help="remove the alias")
    p.set_defaults(func=_alias)

    p = msub.add_parser("delete", help="delete a version (refused while aliased, unless --force)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--force", action="store_true", help="also delete the aliases pointing at it")
    p.set_defaults(func=_delete)


def _tags(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadRequestError(f"--tag {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _list(args: argparse.Namespace) -> int:
    from .registry import list_models

    models = list_models(limit=args.limit)
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in models], indent=2))
        return 0
    rows = [
        [
            m.name,
            m.latest_version,
            m.versions,
            ", ".join(f"{a}→{v}" for a, v in m.aliases.items()),
            _when(m.updated_at),
        ]
        for m in models
    ]
    _table(["NAME", "LATEST", "VERSIONS", "ALIASES", "UPDATED"], rows)
    return 0


def _show(args: argparse.Namespace) -> int:
    from .registry import get_model_version, get_registered_model, list_model_versions
    from .registry_records import MODEL_SCHEME

    if args.model.startswith(MODEL_SCHEME) or args.version is not None:
        mv = get_model_version(args.model, args.version)
        if args.json:
            print(json.dumps(mv.model_dump(mode="json"), indent=2))
        else:
            _print_version(mv)
        return 0
    model = get_registered_model(args.model)
    versions = list_model_versions(args.model, tags=_tags(args.tag) or None)
    if args.json:
        out = model.model_dump(mode="json")
        out["versions_list"] = [v.model_dump(mode="json") for v in versions]
        print(json.dumps(out, indent=2))
        return 0
    print(f"model {model.name}  versions={model.versions}  latest={model.latest_version}")
    rows = [
        [v.version, ",".join(v.aliases), v.model_uri, v.lineage.run_uid, _when(v.created_at)]
        for v in versions
    ]
    _table(["VERSION", "ALIASES", "MODEL", "RUN", "CREATED"], rows)
    return 0


def _register(args: argparse.Namespace) -> int:
    from .registry import register_model

    mv = register_model(
        args.model_uri,
        args.name,
        description=args.description,
        tags=_tags(args.tag),
        aliases=args.alias,
    )
    if args.json:
        print(json.dumps(mv.model_dump(mode="json"), indent=2))
    else:
        aliases = f" (aliases: {', '.join(mv.aliases)})" if mv.aliases else ""
        print(f"registered {mv.uri} → {mv.model_uri}{aliases}")
    return 0


def _alias(args: argparse.Namespace) -> int:
    from .registry import delete_alias, set_alias

    if args.delete:
        if args.version is not None:
            raise BadRequestError("--delete takes no version")
        delete_alias(args.name, args.alias)
        print(f"deleted alias models:/{args.name}@{args.alias}")
        return 0
    if args.version is None:
        raise BadRequestError("give the VERSION the alias should point at (or --delete)")
    mv = set_alias(args.name, args.alias, args.version)
    print(f"models:/{args.name}@{args.alias} → {mv.uri} ({mv.model_uri})")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from .registry import delete_model_version

    delete_model_version(args.name, args.version, force=args.force)
    print(f"deleted models:/{args.name}/{args.version}")
    return 0


def _print_version(mv: ModelVersion) -> None:
    lin = mv.lineage
    print(f"{mv.uri}  →  {mv.model_uri}")
    if mv.aliases:
        print(f"  aliases: {', '.join(mv.aliases)}")
    if mv.description:
        print(f"  description: {mv.description}")
    for k, v in mv.tags.items():
        print(f"  tag {k} = {v}")
    print(
        f"  framework: {mv.framework or '?'}  sha256: {mv.sha256[:12]}  created: "
        f"{_when(mv.created_at)}"
    )
    for k, v in mv.metrics.items():
        print(f"  metric {k} = {v}")
    print(
        f"  run: {lin.run_project}/{lin.run_uid} iteration {lin.run_iteration} "
        f"({lin.run_name or lin.handler}, {lin.run_state})"
    )
    if lin.hub_item:
        print(f"  hub item: {lin.hub_item}:{lin.hub_version} ({lin.hub_source})")
    for d in lin.datasets:
        sha = f" sha256 {d.sha256[:12]}" if d.sha256 else ""
        print(f"  input {d.name}: {d.uri}{sha}")
    if lin.code_hash:
        print(f"  code hash: {lin.code_hash}")
    if lin.requirements_lock:
        print(f"  requirements lock: {lin.requirements_lock}")


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
