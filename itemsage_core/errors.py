"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""


class ItemSageError(Exception):
    """A problem with the user's input, configuration or environment."""


class ContractError(ItemSageError):
    """Input violates a data contract at schema level (the whole dataset is unusable)."""
