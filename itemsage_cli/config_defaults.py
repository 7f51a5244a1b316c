"""Click option defaults read from the config dataclasses, so each default is written once."""

from __future__ import annotations

import dataclasses


def default(cls: type, name: str) -> object:
    """The default of dataclass `cls`'s field `name` (its default_factory's value if it has one)."""
    field = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if field is None:
        raise AttributeError(f"{cls.__name__} has no field {name!r}")
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise AttributeError(f"{cls.__name__}.{name} has no default")
