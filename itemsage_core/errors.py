"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""

import difflib


class ItemSageError(Exception):
    """A problem with the user's input, configuration or environment."""


class OptionError(ItemSageError):
    """Options that do not go together, or an option's value that cannot be used: the CLI
    reports it as a usage error of the command (exit 2)."""


class ContractError(ItemSageError):
    """Input violates a data contract at schema level (the whole dataset is unusable)."""


def no_column(name: str, columns: list[str]) -> str:
    """`no column NAME (nearest: OTHER)`: an unknown column, and the closest of `columns` (in
    any case, as Spark resolves names) when one is close."""
    names = {c.lower(): c for c in columns}
    nearest = difflib.get_close_matches(name.lower(), names, n=1)
    return f"no column {name}" + (f" (nearest: {names[nearest[0]]})" if nearest else "")
