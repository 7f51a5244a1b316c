"""The CLI's error contract (itemsage_cli/group.py), as a user meets it: a bad command line is
one `error:` line naming the command's --help (exit 2); a failed run is one `error:` line (exit
1); never a traceback."""

from __future__ import annotations

import pytest
from cli_runs import itemsage


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("build-index", "--bogus"), "No such option '--bogus'"),
        (("build-index",), "Missing option '--table'"),
        (("frobnicate",), "No such command 'frobnicate'"),
        (("--bogus", "validate"), "No such option '--bogus'"),
        (("query", "--index", ".", "--surface", "s", "--vector-file", "nosuch.npy"),
         "Invalid value for '--vector-file'"),
        (("query", "--index", ".", "--surface", "s"), "give exactly one of --product-id"),
    ],
)  # fmt: skip
def test_a_bad_command_line_is_one_error_line_naming_the_help(args, says):
    done = itemsage(*args)
    command = "itemsage" + (
        "" if args[0].startswith("--") or args[0] == "frobnicate" else f" {args[0]}"
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith("error: ") and says in done.stderr
    assert done.stderr.rstrip().endswith(f"(see '{command} --help')")


def test_a_failed_run_is_one_error_line_and_exit_1(tmp_path):
    done = itemsage("query", "--index", str(tmp_path), "--surface", "home", "--product-id", "P1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        done.stderr.strip().splitlines()[-1]
    ]


def test_help_is_still_help():
    done = itemsage("query", "--help")
    assert done.returncode == 0 and done.stdout.startswith("Usage: itemsage query")
