"""Turn a composed config (OmegaConf DictConfig) or a plain mapping into the schema's dataclasses.

One path for both: the mapping is resolved to plain Python values, unknown keys are refused (one line naming the key
and the valid ones), nested dataclass fields are built recursively, and every dataclass validates its own ranges in
`__post_init__`. Values keep the types they were given, so a plain mapping is checked strictly (`"yes"` is not a
boolean here, whereas Hydra has already converted `key=yes` on the command line).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from lits.core.errors import LitsError

T = TypeVar("T")


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def dataclass_in(annotation: Any) -> type | None:
    """The dataclass an annotation names, also inside Optional[...] / X | None; None for anything else."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def _plain(value: Any, prefix: str, may_be_missing: tuple[str, ...]) -> Any:
    """Plain Python values; a required value (???) still unset is an error unless its key is in `may_be_missing`
    (it then stays "???", for the dataclass to interpret)."""
    if not isinstance(value, (DictConfig, ListConfig)):
        return value
    missing = sorted(set(OmegaConf.missing_keys(value)) - set(may_be_missing))
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise LitsError(f"{key} is required; set it on the command line, e.g. {key}=...")
    try:
        return OmegaConf.to_container(value, resolve=True)
    except InterpolationResolutionError as exc:
        raise LitsError(f"{prefix or 'config'}: {str(exc).splitlines()[0]}; set the value it refers to") from None


def typed(cls: type[T], value: Any, prefix: str = "") -> T:
    """`value` (an instance of `cls`, a mapping or a DictConfig; None = the defaults) as a validated `cls`.

    `prefix` is the value's key in the full config (e.g. "postprocess"), used in error messages.
    """
    if isinstance(value, cls):
        return value
    value = _plain(value, prefix, getattr(cls, "MAY_BE_MISSING", ()))
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise LitsError(f"{prefix or cls.__name__}: expected a mapping of settings, got {value!r}")
    known = _field_types(cls)
    unknown = [str(k) for k in value if k not in known]
    if unknown:
        noun = getattr(cls, "NOUN", "key")
        where = f"{prefix}." if prefix else ""
        raise LitsError(f"{where}{unknown[0]}: unknown {noun}; valid: {', '.join(known)}")
    kwargs = {}
    for name, item in value.items():
        nested = dataclass_in(known[name])
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = typed(nested, item, key) if nested is not None and item is not None else item
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a dataclass without __post_init__ checks got a value it cannot take
        raise LitsError(f"{prefix or cls.__name__}: {exc}") from None


class Schema:
    """Mixin: `from_mapping`, the programmatic twin of a composed config group."""

    @classmethod
    def from_mapping(cls: type[T], mapping: Any) -> T:
        """A dict or DictConfig of this group's settings (None: the defaults), validated; unknown keys refused."""
        return typed(cls, mapping, getattr(cls, "PREFIX", ""))
