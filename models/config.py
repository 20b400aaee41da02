"""Typed config sections: a YAML mapping read once into a frozen dataclass, its keys and types checked.

Every section of a trainer's config (configs/*.yaml) is a frozen dataclass with no defaults: the YAML is
the one place defaults live, so a key missing from it is an error, not a silent fallback. A field's
annotation says what the YAML may hold: ``int`` (an int, not a bool), ``float`` (an int or a float),
``bool``, ``str``, or any of them ``| None``. A class may check ranges in ``__post_init__`` by raising
:class:`ConfigError` with the key's dotted name.
"""

from __future__ import annotations

import dataclasses
import types
import typing


class ConfigError(ValueError):
    """A config file or override that does not fit the config's keys or types."""


def parse_section(cls, raw, section: str):
    """``raw`` (a mapping from YAML) as the frozen dataclass ``cls``; ConfigError naming ``section`` when a
    key is missing, unknown, or of the wrong type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config has no section {section!r} (see configs/)")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    missing, unknown = [n for n in names if n not in raw], sorted(set(raw) - set(names))
    if missing or unknown:
        raise ConfigError(f"section {section!r}: " + "; ".join(
            part for part in (f"missing key(s) {', '.join(missing)}" if missing else "",
                              f"unknown key(s) {', '.join(unknown)} (known: {', '.join(names)})" if unknown else "")
            if part))
    return cls(**{name: _typed(raw[name], hints[name], f"{section}.{name}") for name in names})


def as_dict(config) -> dict:
    """A typed config (a dataclass of sections, or one section) as plain YAML/JSON values."""
    return dataclasses.asdict(config)


def _typed(value, annotation, key: str):
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{key} must be set (got null)")
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(f"{key} must be {names}, got {value!r}")
