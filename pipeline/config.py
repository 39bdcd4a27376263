"""Typed configurations validated at the boundary, with a canonical content hash.

Every stage that takes settings (model, dataset, trainer, classifier, ...) declares a frozen
dataclass deriving from :class:`Config`.  Dictionaries coming from users or the database go through
:meth:`Config.from_dict`, which rejects unknown keys by name and coerces values to the declared
types, so that ``1`` and ``1.0``, ``(3, 5)`` and ``[3, 5]``, ``np.float32(0.1)`` and ``0.1`` produce
the same config and therefore the same :func:`canonical_hash`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import types
import typing
from typing import Any, Mapping, TypeVar

import numpy as np

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration has an unknown key, a missing key or a value of the wrong type."""


def canonical(value: Any) -> Any:
    """Reduce ``value`` to plain JSON types in one canonical spelling.

    Integral floats become ints (``1.0 -> 1``), numpy scalars and arrays become Python numbers and
    lists, tuples become lists and mapping keys are sorted when serialised.
    """
    if isinstance(value, Config):
        return canonical(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return canonical(value.tolist())
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"non-finite number {value!r} in config")
        return int(value) if value.is_integer() else value
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"value {value!r} of type {type(value).__name__} cannot be stored in a config")


def canonical_json(value: Any) -> str:
    """Canonical JSON text of ``value`` (sorted keys, no whitespace)."""
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))


def canonical_hash(value: Any) -> str:
    """32-hex-digit content hash of ``value`` that ignores key order and numeric spelling."""
    return hashlib.md5(canonical_json(value).encode()).hexdigest()


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, np.ndarray)):
            raise ConfigError(f"{name}: expected a sequence, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(f"{name}[{i}]", v, item_type) for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            if float(value).is_integer():
                return int(float(value))
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            value = float(value)
            if math.isfinite(value):
                return value
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if isinstance(annotation, type) and issubclass(annotation, Config):
        if isinstance(value, annotation):
            return value
        return annotation.from_dict(value, _path=f"{name}.")
    return value


OMIT_AT_DEFAULT = "omit_at_default"


def omitted_at_default(default: Any) -> Any:
    """A config field left out of :meth:`Config.to_dict`, and so of the hash, while it holds ``default``.

    For fields that extend a config class whose configs are already stored: a stored config, which
    lacks the field, keeps its hash (and so its database key), and :meth:`Config.from_dict` fills the
    default back in.  A non-default value is stored and hashed.
    """
    return dataclasses.field(default=default, metadata={OMIT_AT_DEFAULT: True})


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of the pipeline's typed configurations.

    Subclasses are frozen dataclasses whose fields carry type annotations and defaults.
    Sequences are stored as tuples so that configs are hashable.
    """

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None = None, *, _path: str = "", **kwargs) -> C:
        """Build a validated config; unknown keys and ill-typed values raise :class:`ConfigError`."""
        values = {**(values or {}), **kwargs}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {values!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} key{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(_path + k) for k in unknown)}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in values.items():
            kwargs[name] = _coerce(_path + name, value, hints[name])
        try:
            config = cls(**kwargs)
        except TypeError as err:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {err}") from None
        config.validate()
        return config

    def validate(self) -> None:
        """Check cross-field constraints; subclasses raise :class:`ConfigError`."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of every field (defaults included), except fields declared with
        :func:`omitted_at_default` while they hold their default."""
        return canonical(
            {
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if not (f.metadata.get(OMIT_AT_DEFAULT) and canonical(getattr(self, f.name)) == canonical(f.default))
            }
        )

    @property
    def hash(self) -> str:
        """Canonical content hash over :meth:`to_dict` (every field, defaults included, except
        :func:`omitted_at_default` fields at their default)."""
        return canonical_hash(self.to_dict())

    def replace(self: C, **changes) -> C:
        return type(self).from_dict({**self.to_dict(), **changes})
