"""Click option defaults read from where they are defined (a config dataclass's field, a
function's parameter), so each default is written once."""

from __future__ import annotations

import dataclasses
import inspect


def default(owner: type | object, name: str) -> object:
    """The default of dataclass `owner`'s field `name` (its default_factory's value if it has
    one), or of callable `owner`'s parameter `name`."""
    if not dataclasses.is_dataclass(owner):
        parameter = inspect.signature(owner).parameters[name]
        if parameter.default is inspect.Parameter.empty:
            raise AttributeError(f"{owner.__qualname__}({name}) has no default")
        return parameter.default
    field = next((f for f in dataclasses.fields(owner) if f.name == name), None)
    if field is None:
        raise AttributeError(f"{owner.__name__} has no field {name!r}")
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise AttributeError(f"{owner.__name__}.{name} has no default")
