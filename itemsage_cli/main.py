"""`itemsage`: the command-line interface (a click group; every command has --help). The group
and its error handling are in group.py; the commands, by what they work on, in *_commands.py."""

from itemsage_cli import (  # noqa: F401  (each module registers its commands on the group)
    data_commands,
    demo_command,
    featurize_command,
    index_commands,
    model_commands,
    report_command,
    table_commands,
    train_command,
)
from itemsage_cli.group import ItemSageGroup, cli

__all__ = ["ItemSageGroup", "cli", "main"]


def main() -> None:
    cli(prog_name="itemsage")


if __name__ == "__main__":
    main()
