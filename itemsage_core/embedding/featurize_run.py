"""A featurize run without Spark: its options, one task's work, the reuse of a previous output,
the output's layout, manifest and mapping, and its summary.

jobs/featurize_job.py runs these around the Spark work (docs/featurize.md): `FeaturizeConfig`
holds a run's options (`itemsage featurize` reads its defaults here); `featurize_task` maps and
checks raw catalog rows (contracts.catalog_check, as the embedding job does), gives every valid row
a sentence embedding of its text (features/sentence_text.py), reused from the previous output where
that output has the same text hash and was made by the same model and features, encoded
otherwise, and writes one data file (the input's raw columns, the vector, the text's hash) and one
quarantine file; `PreviousVectors` finds those reusable vectors; `publish` moves the complete
output into place. This module imports neither Spark nor PyTorch (the CLI reads its defaults).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from itemsage_core.contracts.catalog_check import batch_problems
from itemsage_core.contracts.catalog_contract import DEFAULT_IMAGE_DIM
from itemsage_core.contracts.column_mapping import ColumnMapping, add_failures, mapped
from itemsage_core.embedding.embeddings_table import (
    DEFAULT_MAX_QUARANTINE_SHARE,
    vector_column,
    write_data_file,
)
from itemsage_core.errors import ItemSageError
from itemsage_core.features.sentence_text import (
    DEFAULT_BATCH_SIZE,
    TEXT_FORMAT,
    SentenceEncoder,
    product_text,
    text_hashes,
)
from itemsage_core.storage.uris import is_local_path

TEXT_EMBEDDING = "text_embedding"  # list<float32>, unit length
SOURCE_HASH = "text_embedding_source_hash"  # sentence_text.text_hashes of the embedded text
MANIFEST = "_featurize.json"
MAPPING_FILE = "mapping.toml"
QUARANTINE_DIR = "_quarantine"
FORMAT = "itemsage-featurize/1"
DATA, QUARANTINE = "data", "quarantine"  # the kinds of a task's files


@dataclasses.dataclass(frozen=True)
class FeaturizeConfig:
    """One featurize run's options (docs/featurize.md describes each)."""

    catalog: str
    text_model: str  # a local sentence-transformers folder, or its URI
    out: str
    mapping: ColumnMapping | None = None
    mapping_path: str | None = None  # the mapping's TOML, copied into OUT/mapping.toml
    features: tuple[str, ...] | None = None  # None: default_features of the mapped catalog
    batch_size: int = DEFAULT_BATCH_SIZE
    image_dim: int = DEFAULT_IMAGE_DIM
    max_quarantine_share: float = DEFAULT_MAX_QUARANTINE_SHARE


def mapped_columns(raw_schema: pa.Schema, mapping: ColumnMapping | None) -> list[str]:
    """The columns of the catalog after `mapping` (the mapping applied to no rows)."""
    return mapped(raw_schema.empty_table(), mapping).column_names


def check_out(out: str) -> Path:
    """OUT as a local path that is absent or an earlier featurize output (never another
    directory a rerun would replace)."""
    if not is_local_path(out):
        raise ItemSageError(
            f"--out {out}: featurize writes a local or mounted path (on a cluster, one every "
            "executor sees), then moves it into place; object-store URIs are not supported yet"
        )
    path = Path(out.removeprefix("file://")).absolute()
    if path.exists() and not path.is_dir():
        raise ItemSageError(f"--out {path} is a file; choose a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise ItemSageError(
            f"--out {path} exists and is not a featurize output (no {MANIFEST}); choose another "
            "--out, or remove it"
        )
    return path


def staging_dir(out: Path) -> Path:
    """A new, empty sibling of OUT that the run writes into; `publish` moves it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.featurize-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the output from other users
    return staging


def publish(staging: Path, out: Path) -> None:
    """Replace OUT by the complete `staging` (two renames; the previous OUT is deleted only
    once the new one is in place)."""
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)


def mapping_text(mapping_path: str | None, dim: int) -> str:
    """OUT/mapping.toml: the input mapping's TOML verbatim, then the dense section that reads
    the vectors (`itemsage train --catalog OUT --mapping OUT/mapping.toml`)."""
    head = Path(mapping_path).read_text(encoding="utf-8") if mapping_path else ""
    if head and not head.endswith("\n"):
        head += "\n"
    dense = f'[dense.{TEXT_EMBEDDING}]\nfrom = "{TEXT_EMBEDDING}"\ndim = {dim}\n'
    return f"{head}\n# Added by itemsage featurize.\n{dense}" if head else dense


def read_manifest(out: Path) -> dict | None:
    """OUT's manifest, or None when OUT is not (yet) a featurize output."""
    try:
        return json.loads((out / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclasses.dataclass
class PreviousVectors:
    """The vectors of a previous output, found by text hash. `index` holds each distinct hash
    once with the data file (of `files`, under `directory`) holding its vector; a task reads a
    file's hashes and vectors only when one of its texts is there."""

    directory: str
    files: tuple[str, ...]
    index: pa.Table  # SOURCE_HASH, file (int32)
    dim: int

    def __post_init__(self):
        self._read: dict[int, tuple[pa.Array, np.ndarray]] = {}

    def _file(self, number: int) -> tuple[pa.Array, np.ndarray]:
        if number not in self._read:
            table = pq.read_table(
                os.path.join(self.directory, self.files[number]),
                columns=[SOURCE_HASH, TEXT_EMBEDDING],
            )
            vectors = table.column(TEXT_EMBEDDING).combine_chunks().flatten()
            self._read[number] = (
                table.column(SOURCE_HASH).combine_chunks(),
                np.asarray(vectors, np.float32).reshape(-1, self.dim),
            )
        return self._read[number]

    def lookup(self, hashes: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(found, vectors): which of `hashes` the previous output holds, and their vectors
        (rows of the others are zero)."""
        where = pc.index_in(hashes, value_set=self.index.column(SOURCE_HASH))
        found = where.is_valid().to_numpy(zero_copy_only=False)
        vectors = np.zeros((len(hashes), self.dim), np.float32)
        if not found.any():
            return found, vectors
        rows = np.flatnonzero(found)
        files = self.index.column("file").take(where.filter(found)).to_numpy()
        for number in np.unique(files):
            mine = rows[files == number]
            file_hashes, file_vectors = self._file(int(number))
            at = pc.index_in(hashes.take(pa.array(mine)), value_set=file_hashes).to_numpy()
            vectors[mine] = file_vectors[at]
        return found, vectors


def previous_vectors(
    out: Path, identity: str, features: Sequence[str]
) -> tuple[PreviousVectors | None, str]:
    """The vectors of OUT from an earlier run, when it was made by the same model (identity),
    features and text format; else None. With the reason either way (for the summary)."""
    manifest = read_manifest(out)
    if manifest is None:
        return None, "no previous output"
    if manifest.get("format") != FORMAT:
        return None, f"previous output has format {manifest.get('format')!r}"
    if manifest["model"]["sha256"] != identity:
        return None, "previous output was made by another model"
    if manifest["features"] != list(features) or manifest["text_format"] != TEXT_FORMAT:
        return None, "previous output embedded other features"
    files = tuple(manifest["files"])
    hashes, numbers = [], []
    for number, name in enumerate(files):
        try:
            column = pq.read_table(out / name, columns=[SOURCE_HASH]).column(SOURCE_HASH)
        except (OSError, pa.ArrowException):
            return None, f"previous output's {name} cannot be read"
        hashes.append(column)
        numbers.append(np.full(len(column), number, np.int32))
    if not files:
        return None, "previous output has no rows"
    index = pa.table(
        {
            SOURCE_HASH: pa.chunked_array([c for h in hashes for c in h.chunks], pa.string()),
            "file": np.concatenate(numbers),
        }
    )
    first = pc.index_in(index.column(SOURCE_HASH), value_set=pc.unique(index.column(SOURCE_HASH)))
    keep = np.unique(first.to_numpy(), return_index=True)[1]  # each hash's first row
    index = index.take(pa.array(np.sort(keep)))
    return PreviousVectors(str(out), files, index, manifest["dim"]), "reused by text hash"


def _vectors(
    texts: list[str],
    hashes: pa.Array,
    previous: PreviousVectors | None,
    encoder: Callable[[], SentenceEncoder],
    batch_size: int,
) -> tuple[np.ndarray, int]:
    """The rows' vectors (from `previous` where found, else encoded; each distinct text once)
    and how many rows were reused."""
    if previous is not None:
        found, vectors = previous.lookup(hashes)
    else:
        found, vectors = np.zeros(len(texts), bool), None
    missing = np.flatnonzero(~found)
    if len(missing):
        distinct = {}
        for row in missing:
            distinct.setdefault(texts[row], []).append(row)
        model = encoder()
        encoded = model.encode(list(distinct), batch_size)
        if vectors is None:
            vectors = np.zeros((len(texts), model.dim), np.float32)
        for vector, rows in zip(encoded, distinct.values()):
            vectors[rows] = vector
    return vectors, int(found.sum())


def featurize_task(
    batches: Iterable[pa.RecordBatch],
    encoder: Callable[[], SentenceEncoder],
    config: FeaturizeConfig,
    features: Sequence[str],
    repeated: pa.Table,
    previous: PreviousVectors | None,
    target: str,
    run_id: str,
    started: dt.datetime,
) -> list[dict]:
    """Featurize or quarantine every raw catalog row of `batches`; write one data file into
    `target` (the valid rows' raw columns, TEXT_EMBEDDING, SOURCE_HASH) and one into
    `target`/_quarantine (the embedding job's quarantine rows: product_id, reason,
    raw_json, run_id, quarantined_at), each only when it has rows. `encoder()` gives the model,
    loaded on the first text that must be encoded. Returns the files' descriptions
    (embeddings_table's write_data_file, plus `kind` and in `stats` the counts: encoded, reused,
    dim; quarantined per rule), the mapping's failed conversions on the first."""
    from itemsage_core.embedding.batch_embedder import quarantine_rows

    good, bad, conversions, rules = [], [], {}, {}
    encoded = reused = 0
    dim = previous.dim if previous else None
    for batch in batches:
        raw = pa.table(batch)
        table, problems = batch_problems(
            raw, config.mapping, config.image_dim, repeated, conversions
        )
        for rule, count in problems.counts().items():
            rules[rule] = rules.get(rule, 0) + count
        reasons = problems.render()
        ok = pc.is_null(reasons)
        if problems.rejected:
            bad.append(
                quarantine_rows(
                    table.filter(pc.invert(ok)), reasons.filter(pc.invert(ok)), run_id, started
                )
            )
        if problems.rejected == raw.num_rows:
            continue
        rows = raw.filter(ok)
        texts = product_text(table.filter(ok), features)
        hashes = text_hashes(texts)
        vectors, found = _vectors(texts, hashes, previous, encoder, config.batch_size)
        encoded, reused, dim = encoded + len(texts) - found, reused + found, vectors.shape[1]
        rows = rows.drop_columns(
            [c for c in (TEXT_EMBEDDING, SOURCE_HASH) if c in rows.column_names]
        )
        good.append(
            rows.append_column(
                pa.field(TEXT_EMBEDDING, pa.list_(pa.float32())), vector_column(vectors)
            ).append_column(SOURCE_HASH, hashes)
        )
    described = []
    for kind, tables, where, counts in (
        (DATA, good, target, {"encoded": encoded, "reused": reused, "dim": dim}),
        (QUARANTINE, bad, os.path.join(target, QUARANTINE_DIR), {"rules": rules}),
    ):
        if tables:
            rows = pa.concat_tables(tables, promote_options="default")
            written = write_data_file(where, rows, run_id)
            described.append(
                {
                    "kind": kind,
                    **written,
                    "stats": json.dumps(counts),
                    "coverage": None,
                    "conversions": None if described else json.dumps(conversions),
                }
            )
    return described


def run_totals(files: list[dict], rows_in: int) -> dict:
    """The run's counts from its tasks' file descriptions: every catalog row is featurized
    (encoded or reused) or quarantined, else RuntimeError (a run never publishes a loss)."""
    data = [f for f in files if f["kind"] == DATA]
    stats = [json.loads(f["stats"]) for f in data]
    rules: dict[str, int] = {}
    for f in files:
        if f["kind"] == QUARANTINE:
            for rule, count in json.loads(f["stats"])["rules"].items():
                rules[rule] = rules.get(rule, 0) + count
    conversions: dict = {}
    for f in files:
        if f["conversions"]:
            add_failures(conversions, json.loads(f["conversions"]))
    totals = {
        "rows_in": rows_in,
        "featurized": sum(f["rows"] for f in data),
        "encoded": sum(s["encoded"] for s in stats),
        "reused": sum(s["reused"] for s in stats),
        "quarantined": sum(f["rows"] for f in files if f["kind"] == QUARANTINE),
        "quarantined_by_rule": rules,
        "conversions": conversions,
        "dim": next((s["dim"] for s in stats if s["dim"]), None),
    }
    totals["counts_add_up"] = (
        rows_in == totals["featurized"] + totals["quarantined"]
        and totals["featurized"] == totals["encoded"] + totals["reused"]
    )
    if not totals["counts_add_up"]:
        raise RuntimeError(f"row counts do not add up: {totals}")
    return totals


def check_quarantine_share(summary: dict, max_share: float) -> None:
    """Refuse to replace OUT from a catalog that is empty or mostly rejected (the sign of a
    broken export or a wrong mapping)."""
    rows, rejected = summary["rows_in"], summary["quarantined"]
    if max_share >= 1 or (rows and rejected <= max_share * rows):
        return
    what = (
        "the catalog has no rows"
        if not rows
        else f"{rejected} of {rows} rows ({rejected / rows:.0%}) were quarantined "
        f"({summary['quarantined_by_rule']}), more than --max-quarantine-share {max_share:g}"
    )
    raise ItemSageError(
        f"{what}: {summary['out']} was left as it was. Fix the catalog or the mapping, or rerun "
        "with --max-quarantine-share 1 to write it anyway"
    )


def manifest(summary: dict, model_files: dict[str, str], files: list[dict]) -> dict:
    """OUT/_featurize.json: the model's identity, the features, the columns, the files, the
    summary."""
    return {
        "format": FORMAT,
        "model": {
            "source": summary["text_model"],
            "sha256": summary["model_sha256"],
            "files": model_files,
        },
        "features": summary["features"],
        "text_format": TEXT_FORMAT,
        "dim": summary["dim"],
        "columns": {"embedding": TEXT_EMBEDDING, "source_hash": SOURCE_HASH},
        "files": sorted(f["path"] for f in files if f["kind"] == DATA),
        "quarantine_files": sorted(
            f"{QUARANTINE_DIR}/{f['path']}" for f in files if f["kind"] == QUARANTINE
        ),
        "summary": summary,
    }


def summary_line(summary: dict) -> str:
    """The progress line of a published run."""
    return (
        f"featurized {summary['featurized']} products into {summary['out']} "
        f"({summary['encoded']} encoded, {summary['reused']} reused); "
        f"{summary['quarantined']} rows quarantined; {summary['dim']}-d vectors; "
        f"{summary['seconds']['total_s']:.1f}s"
    )
