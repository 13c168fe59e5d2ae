"""What every record shares: `RecordError`, the checks of one field (a number, a count, a text, a value per
model, an object), and the one JSON layout of a record (`_to_json`, `_from_json`: its fields one to one, the
keys it does not type kept as written in `provenance` or `extra`)."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

from w2s_cli.numerics.stats import MODELS

SIDES = ("weak", "strong")


class RecordError(ValueError):
    """A record with a missing or ill-typed field (the message names it)."""


# field checks ---------------------------------------------------------------------------------------------
def _number(name: str, v: Any, optional: bool = True) -> float | int | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise RecordError(f"'{name}' is {v!r}, not a number")
    return v


def _count(name: str, v: Any, optional: bool = False, least: int = 0) -> int | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
        raise RecordError(f"'{name}' is {v!r}, not a whole number >= {least}")
    return v


def _text(name: str, v: Any, optional: bool = True) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise RecordError(f"'{name}' is {v!r}, not text")
    return v


def _per_model(name: str, d: Any, optional_values: bool = True, models: tuple[str, ...] = MODELS) -> dict:
    """A number (or None) for each of the four models, in their order."""
    if not isinstance(d, Mapping):
        raise RecordError(f"'{name}' is not an object")
    missing = [k for k in models if k not in d]
    if missing:
        raise RecordError(f"'{name}' has no '{missing[0]}'")
    return {k: _number(f"{name}.{k}", d[k], optional_values) for k in models}


def _mapping(name: str, d: Any, optional: bool = True) -> dict | None:
    if d is None and optional:
        return None
    if not isinstance(d, Mapping):
        raise RecordError(f"'{name}' is not an object")
    return dict(d)


def _need(d: Any, *keys: str, where: str = "record") -> Mapping:
    if not isinstance(d, Mapping):
        raise RecordError(f"'{where}' is not an object")
    missing = [k for k in keys if k not in d]
    if missing:
        raise RecordError(f"'{where}' has no '{missing[0]}'")
    return d


def _artifact(d: Any, kind: str, *keys: str) -> Mapping:
    """The JSON record of a `kind` artifact, with the keys it cannot go without (the first one missing named)."""
    if not isinstance(d, Mapping):
        raise RecordError(f"a '{kind}' record that is not an object")
    missing = [k for k in keys if k not in d]
    if missing:
        raise RecordError(f"a '{kind}' artifact without '{missing[0]}'")
    return d


def _typed(name: str, v: Any, kind: type, optional: bool = False) -> Any:
    """A nested record: given as one, or built from its JSON object (`kind.from_json`)."""
    if v is None and optional:
        return None
    if isinstance(v, kind):
        return v
    return kind.from_json(_need(v, where=name))


def _typed_map(name: str, d: Any, kind: type) -> dict[str, Any]:
    """An object of nested records (by model, by fit, ...), each given as one or as its JSON."""
    return {k: _typed(f"{name}.{k}", v, kind) for k, v in _mapping(name, d, optional=False).items()}


def _set(obj: Any, name: str, value: Any) -> None:
    """A checked (normalised) value into a frozen dataclass's field, from its __post_init__."""
    object.__setattr__(obj, name, value)


# the JSON of a record: its fields one to one ----------------------------------------------------------------
REST = ("provenance", "extra")  # the field keeping the keys a record does not type, as written


NOT_JSON = {"json": False}  # the metadata of a field a record holds in memory only (never written)


def _names(cls: type) -> tuple[str, ...]:
    """The keys a record types: its fields in their declared order, less `provenance` or `extra` and those
    held in memory only (`NOT_JSON`)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in REST and f.metadata.get("json", True))


def _json(v: Any) -> Any:
    """A field's value as JSON: a record by its to_json(), maps and lists element by element (None as None)."""
    if hasattr(v, "to_json"):
        return v.to_json()
    if isinstance(v, Mapping):
        return {k: _json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    return v


def _to_json(rec: Any, omit_none: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record's typed fields as JSON, in their declared order (those of `omit_none` left out when None);
    the keys it keeps as written go first (`provenance`, which the typed fields override) or last (`extra`,
    which overrides them)."""
    out = {k: _json(getattr(rec, k)) for k in _names(type(rec)) if k not in omit_none or getattr(rec, k) is not None}
    if "provenance" in rec.__dataclass_fields__:
        return {**rec.provenance, **out}
    if "extra" in rec.__dataclass_fields__:
        return {**out, **rec.extra}
    return out


def _from_json(cls: type, d: Mapping[str, Any], **given: Any) -> Any:
    """A record built from a JSON object: each typed field from its key (None where absent) but those `given`
    (nested records, defaults); the keys it does not type kept as written, in its `provenance` or `extra`."""
    names = _names(cls)
    kwargs = {k: d.get(k) for k in names if k not in given}
    for rest in (r for r in REST if r in cls.__dataclass_fields__):
        kwargs[rest] = {k: v for k, v in d.items() if k not in names}
    return cls(**kwargs, **given)


def read_record(art: Any, kind: type) -> Any:
    """The typed record of an artifact (`kind`: TeacherRecord, PseudoLabelsRecord, ResultRecord, ...): the one
    built when it was loaded (store/artifact.py checks every artifact it reads so), else built from its JSON
    now; one that does not fit is one W2SError naming the file and the field."""
    from w2s_cli.errors import W2SError, printable

    if isinstance(getattr(art, "record", None), kind):
        return art.record
    try:
        return kind.from_json(art.meta)
    except RecordError as exc:
        raise W2SError(f"{art.kind} {printable(art.path)}: corrupt w2s record: {exc}") from None
