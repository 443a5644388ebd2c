"""``tickrun secret set|list|delete``: the controller's secret store from the command line.

Values are given as ``KEY=VALUE``, ``KEY=@file`` (the file's text, trailing newline dropped) or
``KEY=-`` (one line from standard input), so a value need not sit in the shell's history. They
go to ``PUT /api/secrets/NAME``; nothing ever prints them back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tickrun.functions.errors import SpecError


def register(sub: Any, get: Any) -> None:
    sec = sub.add_parser(
        "secret",
        help="manage secrets that functions reference (valueFrom.secretKeyRef)",
        description="A function's env entry {name: X, valueFrom: {secretKeyRef: {name: S, "
        "key: K}}} gets key K of secret S when its replicas start.",
    )
    actions = sec.add_subparsers(dest="secret_command", metavar="ACTION")
    actions.required = True
    put = actions.add_parser("set", help="create or replace a secret")
    put.add_argument("name")
    put.add_argument("pairs", nargs="+", metavar="KEY=VALUE|KEY=@file|KEY=-")
    put.add_argument("--state-dir", default=None, help=argparse.SUPPRESS)
    put.set_defaults(func=_set)
    ls = actions.add_parser("list", help="secret names and keys (never values)")
    ls.add_argument("--state-dir", default=None, help=argparse.SUPPRESS)
    ls.set_defaults(func=_list)
    rm = actions.add_parser("delete", help="delete a secret")
    rm.add_argument("name")
    rm.add_argument("--state-dir", default=None, help=argparse.SUPPRESS)
    rm.set_defaults(func=_delete)


def _client(args: argparse.Namespace) -> Any:
    from .client import ControllerClient

    return ControllerClient.from_env(args.state_dir)


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"{key or pair!r}: give KEY=VALUE, KEY=@file or KEY=-")
        if value == "-":
            value = sys.stdin.readline().rstrip("\n")
        elif value.startswith("@"):
            try:
                value = Path(value[1:]).read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                raise SpecError(f"{key}: cannot read {value[1:]}: {exc.strerror}") from exc
        data[key] = value
    return data


def _set(args: argparse.Namespace) -> int:
    body = {"data": parse_pairs(args.pairs)}
    out = _client(args)._request("PUT", f"/api/secrets/{args.name}", body)
    print(f"secret {out['name']}: keys {', '.join(out['keys'])}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    for item in _client(args)._request("GET", "/api/secrets")["secrets"]:
        print(f"{item['name']}\t{','.join(item['keys'])}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    _client(args)._request("DELETE", f"/api/secrets/{args.name}")
    print(f"deleted secret {args.name}", file=sys.stderr)
    return 0
