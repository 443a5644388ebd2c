"""Request ids: every HTTP answer of a replica carries one, the caller's when it is sane."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping

REQUEST_ID_HEADER = "X-Request-Id"

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Request-Id when it is sane, else a fresh one (unique per process)."""
    given = headers.get(REQUEST_ID_HEADER)
    if given and _SAFE_ID.match(given):
        return given
    return f"{_ID_PREFIX}{next(_id_counter):010x}"
