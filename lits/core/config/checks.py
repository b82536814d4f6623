"""Range checks for the typed config schema: each failure is one LitsError line naming the key, the value and the fix.

Types are checked by OmegaConf when a config is composed (a string for an integer key never gets here); ranges and
choices are checked here, from the dataclasses' `__post_init__`, when a composed config becomes typed
(`lits.core.config.typed`). Every check returns the value normalised (ints as int, pairs as tuples of floats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lits.core.errors import LitsError


def show(value: Any) -> str:
    """A value as it would be typed on the command line: 5, 0.5, abc, [1,2]."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def fail(key: str, value: Any, expected: str) -> LitsError:
    return LitsError(f"{key}={show(value)}: {expected}; fix it in the config or on the command line ({key}=...)")


def unresolved(value: Any) -> bool:
    """An interpolation such as "${trainer.max_epochs}" in a default: checked once resolved (`typed`)."""
    return isinstance(value, str) and value.startswith("${")


def is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))


def integer(key: str, value: Any, low: int | None = None, high: int | None = None, hint: str = "") -> int:
    """An int in [low, high] (either bound may be None); `hint` is appended to the error."""
    ok = is_number(value) and float(value) == int(value)
    ok = ok and (low is None or int(value) >= low) and (high is None or int(value) <= high)
    if not ok:
        if low is not None and high is not None:
            expected = f"give an integer in {low}..{high}"
        elif low is not None:
            expected = f"give an integer >= {low}"
        else:
            expected = "give an integer"
        raise fail(key, value, expected + hint)
    return int(value)


def number(key: str, value: Any, low: float | None = None, high: float | None = None, open_low: bool = False) -> float:
    """A finite float in [low, high], or (low, high] with open_low."""
    if unresolved(value):
        return value
    ok = is_number(value)
    if ok and low is not None:
        ok = float(value) > low if open_low else float(value) >= low
    ok = ok and (high is None or float(value) <= high)
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"> {low:g}" if open_low else f">= {low:g}")
        if high is not None:
            bounds.append(f"<= {high:g}")
        raise fail(key, value, "give a finite number" + (" " + " and ".join(bounds) if bounds else ""))
    return float(value)


def probability(key: str, value: Any) -> float:
    if not (is_number(value) and 0.0 <= float(value) <= 1.0):
        raise fail(key, value, "give a probability in [0, 1]")
    return float(value)


def choice(key: str, value: Any, choices: Sequence[str], what: str = "value") -> str:
    if value not in choices:
        raise fail(key, value, f"unknown {what}; choose one of {', '.join(choices)}")
    return str(value)


def flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(key, value, "give true or false")
    return value


def pair(key: str, value: Any, low: float | None = None, open_low: bool = False, high: float | None = None):
    """[lo, hi] with lo <= hi, both finite and inside the bounds; returned as a tuple of two floats."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise fail(key, value, "give a pair [low, high] of numbers") from None
    inside = all(
        math.isfinite(v) and (low is None or (v > low if open_low else v >= low)) and (high is None or v <= high)
        for v in (lo, hi)
    )
    if not inside or lo > hi:
        where = ""
        if low is not None or high is not None:
            where = f" inside {'(' if open_low else '['}{low if low is not None else '-inf'}, "
            where += f"{high if high is not None else 'inf'}]"
        raise fail(key, value, f"give a pair [low, high] with low <= high{where}")
    return lo, hi


def optional(check, key: str, value: Any, *args, **kwargs):
    """None passes; anything else goes through `check(key, value, *args, **kwargs)`."""
    return None if value is None else check(key, value, *args, **kwargs)
