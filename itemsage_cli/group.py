"""The `itemsage` click group, its error handling and the options Spark commands share.

User mistakes (ItemSageError, and Spark's analysis errors unless --verbose) print one
`error: ...` line on stderr and exit with status 1; a bad command line (an unknown option, a
missing or invalid value, options that do not go together) prints one `error: ...` line naming
the command's --help and exits with status 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from itemsage_core.errors import ItemSageError, OptionError


def _quiet_analysis_error(exc: Exception) -> bool:
    """Whether `exc` is Spark's AnalysisException while Spark's log is quiet (no --verbose, no
    ITEMSAGE_SPARK_LOG_LEVEL above ERROR). pyspark is imported by Spark commands only."""
    errors = sys.modules.get("pyspark.errors")
    if errors is None or not isinstance(exc, errors.AnalysisException):
        return False
    from jobs.spark_session import QUIET_LEVELS, log_level

    return log_level() in QUIET_LEVELS


class CommandLineError(click.UsageError):
    """A usage error shown as one line: `error: MESSAGE (see 'itemsage CMD --help')`, exit 2."""

    def show(self, file=None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx else ""
        click.echo(f"error: {self.format_message()}{hint}", err=True)


def _one_line(exc: click.UsageError) -> click.UsageError:
    """A click usage error as a CommandLineError (a bare `itemsage` still shows the help)."""
    if isinstance(exc, (CommandLineError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return CommandLineError(exc.format_message(), exc.ctx)


class ItemSageCommand(click.Command):
    """A command whose run recipe's OptionError is a usage error of the command (exit 2)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OptionError as exc:
            raise CommandLineError(str(exc), ctx) from None


class ItemSageGroup(click.Group):
    """A click group that turns ItemSageError (and, without --verbose, Spark's analysis errors)
    into one clear line and a non-zero exit."""

    command_class = ItemSageCommand

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except ItemSageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            if not _quiet_analysis_error(exc):
                raise
            click.echo(f"error: {str(exc).splitlines()[0]}", err=True)
            sys.exit(1)


@click.group(cls=ItemSageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="itemsage-spark")
@click.option(
    "--verbose",
    is_flag=True,
    help="Spark's full console log (WARN; ITEMSAGE_SPARK_LOG_LEVEL wins) and the "
    "traceback of a Spark analysis error. Default: Spark logs errors only and "
    "an analysis error is one `error:` line.",
)
def cli(verbose: bool) -> None:
    """ItemSage on Spark: product embeddings and per-surface nearest-neighbour indexes.

    Run `itemsage COMMAND --help` for a command's options.
    """
    if verbose:
        os.environ.setdefault("ITEMSAGE_SPARK_LOG_LEVEL", "WARN")


# Options several commands share, written once.
catalog_option = click.option(
    "--catalog",
    required=True,
    help="Catalog Parquet: a file, directory or glob, local or on an object store (s3://, "
    "gs://, abfs://; read by the tasks through pyarrow, no Hadoop connector).",
)
mapping_option = click.option(
    "--mapping",
    type=click.Path(dir_okay=False),
    default=None,
    help="Column mapping TOML for the catalog.",
)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on stdout."
)


def index_root_option(command):
    """--index INDEX_ROOT and --cache-dir, for the commands that read builds."""
    command = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Where builds read from an object store are kept, one directory per build id, "
        "so each is downloaded once [default: $ITEMSAGE_CACHE_DIR, else "
        "~/.cache/itemsage/indexes].",
    )(command)
    return click.option(
        "--index",
        "index_root",
        required=True,
        metavar="INDEX_ROOT",
        help="Index root written by `itemsage build-index`: a path or an object-store URI "
        "(s3://, gs://, abfs://, hdfs://).",
    )(command)


model_dir_option = click.option(
    "--model",
    "model_dir",
    required=True,
    metavar="DIR_OR_URI",
    help="Model written by `itemsage train`: a directory, or an object-store URI (s3://, "
    "gs://, abfs://) fetched once per machine into $ITEMSAGE_CACHE_DIR/checkpoints and "
    "verified by checksum.",
)
summary_json_option = click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the run summary to this file.",
)


def spark_options(fn: Callable) -> Callable:
    """--master and repeated --conf k=v, for commands that start Spark."""
    fn = click.option(
        "--conf",
        "conf",
        multiple=True,
        metavar="KEY=VALUE",
        help="Spark configuration, repeatable (overrides the defaults).",
    )(fn)
    return click.option(
        "--master",
        default=None,
        metavar="URL",
        help="Spark master (default: local[*], or spark-submit's).",
    )(fn)


def shown_default(owner: type, name: str) -> dict:
    """An option's default read from the request (or config) dataclass it fills, shown in
    --help: `click.option(..., **shown_default(TrainRequest, "seed"))`."""
    from itemsage_runs.defaults import default

    return {"default": default(owner, name), "show_default": True}


def write_summary(summary: dict, summary_json: str | None, echo: bool = True) -> None:
    """Print the run summary as JSON (unless not `echo`), and write it to `summary_json` when
    given."""
    text = json.dumps(summary, indent=2, sort_keys=True)
    if summary_json:
        Path(summary_json).write_text(text + "\n")
    if echo:
        click.echo(text)
