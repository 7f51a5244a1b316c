"""The file spark-submit runs for every ItemSage job: `spark_entry.py JOB [OPTIONS]` is
`itemsage JOB [OPTIONS]` (validate, embed, build-index), so a job takes the same options,
defaults and errors under spark-submit as from the command line (spark-submit.sh)."""

from __future__ import annotations

import sys

from itemsage_cli.main import cli


def main(argv: list[str] | None = None) -> None:
    cli(sys.argv[1:] if argv is None else argv, prog_name="itemsage")


if __name__ == "__main__":
    main()
