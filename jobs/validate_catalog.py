"""spark-submit entry point: validate a catalog against the contract (`itemsage validate`).

    spark-submit.sh validate --catalog PATH [--mapping FILE] [--json]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from itemsage_cli.main import cli

    cli(["validate", *(sys.argv[1:] if argv is None else argv)], prog_name="itemsage")


if __name__ == "__main__":
    main()
