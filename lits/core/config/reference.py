"""The options reference (docs/reference/options.md), generated from the typed schema: every key of every config
group and task with its default and the comment that documents it in the schema's source. `python
scripts/config_reference.py` rewrites the page; tests/core/test_docs.py fails when the committed page is stale.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from omegaconf import MISSING

from lits.core.config.checks import show
from lits.core.config.store import GROUP_SCHEMAS, TASK_SCHEMAS
from lits.core.config.typed import dataclass_in

# Nested sections of a task listed as one row (their keys are the group's, listed with it)
SECTION_ROWS = ("data",)
_FIELD = re.compile(r"^\s{4}(\w+): [^#]*?(?:#\s*(.*))?$")


def field_comments(schema: type) -> dict[str, str]:
    """{field: its comment}, from `schema` and the dataclasses it extends (`_class_comments`)."""
    comments: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if dataclasses.is_dataclass(cls) and cls.__module__.startswith("lits."):
            comments.update({k: v for k, v in _class_comments(cls).items() if v or k not in comments})
    return comments


def _class_comments(schema: type) -> dict[str, str]:
    """{field: its comment in the class body}. A field's line comment describes it; a block of comment lines between
    two fields describes the next one when that has no line comment of its own, else it continues the previous
    one's (a line comment wrapped onto the next lines)."""
    items: list[tuple[str, str]] = []  # ("field", name) / ("comment", text) / ("code", "")
    inline: dict[str, str] = {}
    for line in inspect.getsource(schema).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith(("def ", "@")):
            break
        field = _FIELD.match(line)
        if field:
            items.append(("field", field.group(1)))
            inline[field.group(1)] = field.group(2) or ""
        elif stripped.startswith("#"):
            items.append(("comment", stripped.lstrip("#").strip()))
        elif "#" in line and items and items[-1][0] == "field" and not inline[items[-1][1]]:
            inline[items[-1][1]] = line.split("#", 1)[1].strip()  # a field written over several lines
        else:
            items.append(("code", ""))
    comments = dict(inline)
    block: list[str] = []
    previous = None
    for kind, value in items:
        if kind == "comment":
            block.append(value)
            continue
        if kind == "field" and block:
            if not inline[value] or previous is None:
                comments[value] = " ".join([*block, inline[value]]).strip()
            else:
                comments[previous] = f"{comments[previous]} {' '.join(block)}".strip()
        block = []
        previous = value if kind == "field" else None
    return comments


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is MISSING or value == "???":
        return "(required)"
    return None if dataclasses.is_dataclass(value) else show(value)


def rows(schema: type, prefix: str, skip: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    """(key, default, comment) of every field of `schema` and its nested dataclasses, in source order."""
    comments, hints, out = field_comments(schema), typing.get_type_hints(schema), []
    for f in dataclasses.fields(schema):
        if f.name in skip:
            continue
        nested = dataclass_in(hints[f.name])
        if nested is not None and (nested.__name__ == "PostprocessOverrides" or prefix + f.name in SECTION_ROWS):
            group = "postprocess" if nested.__name__ == "PostprocessOverrides" else f.name
            out.append((f"{prefix}{f.name}.*", "null", f"{comments.get(f.name, '')} (the keys of `{group}` above)"))
            continue
        if nested is not None:
            out += rows(nested, f"{prefix}{f.name}.")
            continue
        out.append((f"{prefix}{f.name}", _default(f) or "", comments.get(f.name, "")))
    return out


def _table(entries: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| key | default | what it does |", "|---|---|---|"]
    for key, default, comment in entries:
        cell = comment.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {cell} |" if default else f"| `{key}` | | {cell} |")
    return lines


def options_markdown() -> str:
    """The whole page: one table per config group (train.py's), then the keys of each task of its own."""
    lines = [
        "# Every option",
        "",
        "Generated from the typed schema (`lits/core/config/`) by `python scripts/config_reference.py`; "
        "tests/core/test_docs.py fails when this page is stale. The defaults are the schema's: a group option "
        "(`data=lits`, `model=resunet34`, `debug=smoke`, an `experiment=`) changes some of them, as its YAML file in "
        "`configs/` says. Set any key on the command line: `python train.py trainer.max_epochs=3`.",
        "",
    ]
    for group, schema in GROUP_SCHEMAS.items():
        if group in ("paths", "faults"):
            continue  # where things go (set by Hydra), and the tests' fault injection
        lines += [f"## `{group}` (train.py)", "", *_table(rows(schema, f"{group}.")), ""]
    tasks = {"train": "train.py", "evaluate": "evaluate.py", "predict": "predict.py", "export": "export.py"}
    for task, script in tasks.items():
        schema = TASK_SCHEMAS[f"{task}_schema"]
        skip = (*GROUP_SCHEMAS, "name") if task == "train" else ("paths", "name")
        entries = rows(schema, "", skip)
        if task == "predict":  # given as model=DIR on the command line (predict.py says why)
            entries = [(("model" if k == "model_dir" else k), d, c) for k, d, c in entries]
        lines += [f"## {script}", "", *_table(entries), ""]
    return "\n".join(lines)
