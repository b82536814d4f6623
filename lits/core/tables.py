"""Tables people read in a terminal and in markdown."""

from __future__ import annotations

import math

import numpy as np


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 case', '3 cases', '1 label map': a number and its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table (also readable in a terminal); floats with 4 decimals, NaN / None as '-'."""

    def cell(v):
        if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
            return "-"
        return f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v)

    body = [[cell(row[c]) if c in row else "" for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in body)]) for i, c in enumerate(columns)]  # no rows: the heading
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in body]
    return "\n".join(lines)
