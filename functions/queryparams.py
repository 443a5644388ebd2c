"""Integer query parameters, checked before they reach a database or a loop.

``int("99999999999999999999")`` succeeds in Python but overflows SQLite's 64-bit integers (an
``OverflowError`` deep inside the driver, a 500); a negative ``LIMIT`` means "no limit" there.
Every API that takes a number from a query string parses it here, with explicit bounds, so a bad
value is a 400 naming the parameter and its range.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import BadRequestError

INT64_MAX = 2**63 - 1
# Longer than any int64 in decimal (19 digits, a sign): refused before int() parses it.
_MAX_DIGITS = 20


def int_param(
    query: Mapping[str, str],
    name: str,
    default: int | None = None,
    *,
    lo: int = 0,
    hi: int = INT64_MAX,
) -> int | None:
    """``query[name]`` as an int in ``[lo, hi]``; ``default`` when absent or empty.

    Raises :class:`BadRequestError` (400) for anything else: not an integer, out of range,
    absurdly long.
    """
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if len(text) > _MAX_DIGITS:
        raise BadRequestError(f"query parameter {name} must be an integer in [{lo}, {hi}]")
    try:
        value = int(text)
    except ValueError:
        raise BadRequestError(
            f"query parameter {name} must be an integer in [{lo}, {hi}]"
        ) from None
    if not lo <= value <= hi:
        raise BadRequestError(f"query parameter {name} must be an integer in [{lo}, {hi}]")
    return value
