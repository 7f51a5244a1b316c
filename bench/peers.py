"""Our embedding job against its peers on the same checkpoint and catalog (`make bench-peers`).

    python bench/peers.py [--products N ...] [--flipkart PATH] [--flipkart-rows N]
                          [--systems SYSTEM ...] [--repeats N] [--workdir DIR] [--keep]
                          [--out bench/results/peers.json]

Issue 22. Catalogs: the synthetic world at each `--products` size (bench/workload.py's
`write_catalog`) and the Flipkart sample with its column mapping (conf/mappings/flipkart.toml;
skipped with a message when the file is absent). One checkpoint per catalog (`paper_model`:
initialised, paper-shaped, vocabulary from that catalog's valid rows); every system reads the same
catalog files and loads the same checkpoint directory. Systems, each in its own child process,
run one at a time, all with 2 threads of encoder work and encoder batches of 512 products:

- `ours`: `itemsage embed --master local[2]` (2 tasks x 1 torch thread): pyarrow reads row-group
  slices inside the tasks, conform + check, tokenise + encode + [CLS]-only forward, and what the
  peers do not do: content hashes, the quarantine table, one Delta commit per table.
- `spark_udf`: `spark.read.parquet` -> `pyspark.ml.functions.predict_batch_udf` (model loaded
  once per Python worker, its documented model cache; 1 torch thread per worker) on a
  `local[2]` session from the project's session builder -> `write.parquet`.
- `ray_parquet`, `ray_delta`: `ray.data.read_parquet` -> streaming repartition into blocks of
  2,048 rows -> `map_batches` with a callable class on a fixed pool of 2 actors (1 CPU, 1 torch
  thread each; pyarrow batches, zero-copy) -> `write_parquet`, or Ray's own `write_delta` into a
  Delta table. Ray gets 3 logical CPUs (2 for the actors, 1 for its read and write tasks) on the
  same 2 cores.
- `in_process`: pyarrow reads the files, the same per-batch code, torch with 2 threads, one
  Parquet file written.

Each peer's per-batch work is the job's own library code: `check_batch` (mapping, conform, row
rules, duplicate ids against the catalog's repeated ids, counted first with pyarrow as the job
does) and `BatchEmbedder.vectors` (tokenise, encode, [CLS]-only forward in batches of 512).

Measured per system: wall seconds from the child's start to its exit (engine start-up included:
products/s = valid rows / wall s), the system's own work seconds after its engine started (Spark
session, Ray runtime, or imports done), the seconds its worker processes spent inside the
per-batch work (peers only: "in fn", a share of work s x processes), and the peak of the summed
PSS of every process the run started (the child and all its descendants, plus any process
carrying the run's environment tag, such as a Ray worker re-parented to init; sampled every
0.2 s from /proc), with its breakdown by process. Checked, and the bench exits 1 otherwise:
every system writes exactly the catalog's valid rows, with the same product ids as ours, and
each vector is within 1e-5 (max abs difference) of ours. With --repeats N the systems run in N
interleaved rounds and each is reported by its median run. Prints a table; writes JSON
(default bench/results/peers.json). BENCHMARKS.md ("Peers") explains the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from index_builder.partitioning import vectors_of
from itemsage_core.contracts.catalog_check import (
    BATCH_ROWS,
    check_batch,
    checked_row_groups,
    conformed_ids,
    row_group_ids,
    validate_local_catalog,
)
from itemsage_core.contracts.catalog_contract import (
    CONTRACT_COLUMNS,
    PRODUCT_ID,
    repeated_ids_of,
)
from itemsage_core.contracts.column_mapping import ColumnMapping, load_mapping
from itemsage_core.embedding.embeddings_table import vector_column
from itemsage_core.storage.parquet_io import parquet_files

THREADS = 2
BATCH = 512
TOLERANCE = 1e-5
SYSTEMS = ("ours", "spark_udf", "ray_parquet", "ray_delta", "in_process")
FLIPKART_MAPPING = ROOT / "conf/mappings/flipkart.toml"
TAG = "ITEMSAGE_PEERS_RUN"  # every process a run starts inherits it (Ray daemons included)
SAMPLE_S = 0.2
RUN_KEYS = ("wall_s", "work_s", "peak_mem_mib", "max_abs_diff", "bit_identical", "load_before")
# Rows per Ray block: at 20k, 2,048 and 5,120 ran alike, 512 (a block per batch) ~20% slower.
RAY_BLOCK_ROWS = 4 * BATCH


# --------------------------------------------------------------------------------------------
# The children: one system each, started as `peers.py --run SYSTEM ...`.
# --------------------------------------------------------------------------------------------


class Inputs:
    """What every system needs, read the same way by each: the mapping, the checkpoint's identity,
    the columns to read and the catalog's repeated ids (for the duplicate-id rule)."""

    def __init__(
        self, catalog: str, model_dir: str, mapping_path: str | None, profile: str | None = None
    ):
        from itemsage_core.model.checkpoint import CONFIG, read_checkpoint_manifest

        self.catalog, self.model_dir, self.profile = catalog, model_dir, profile
        self.mapping: ColumnMapping | None = load_mapping(mapping_path) if mapping_path else None
        self.model_version = read_checkpoint_manifest(model_dir)["model_version"]
        self.image_dim = json.loads(Path(model_dir, CONFIG).read_text())["image_dim"]
        self.files = parquet_files(catalog)
        schema = pq.read_schema(self.files[0])
        wanted = self.mapping.sources if self.mapping else set(CONTRACT_COLUMNS)
        self.columns = [name for name in schema.names if name in wanted]
        self.types = [schema.field(name).type for name in self.columns]
        # One pyarrow pass over the id columns, as the job and `itemsage validate` count them.
        groups = checked_row_groups(catalog, self.mapping)
        ids = [row_group_ids(file, group, self.mapping) for file, group, _ in groups]
        self.repeated = repeated_ids_of(pa.chunked_array(ids, pa.string()))
        self.row_groups = len(groups)

    def embedder(self, threads: int):
        import torch

        from itemsage_core.embedding.batch_embedder import BatchEmbedder

        torch.set_num_threads(threads)
        return BatchEmbedder.for_model(self.model_dir, self.model_version, BATCH, device="cpu")


class Clock:
    """Seconds one process spends in the per-batch work, by part (check: mapping, conform and row
    rules; encode: tokenise, encode and forward; convert: a system's own format conversions),
    written to `directory`/PID.json after every batch: Spark's and Ray's workers have no hook at
    the end of the work."""

    def __init__(self, directory: str | None):
        self.path = Path(directory, f"{os.getpid()}.json") if directory else None
        self.seconds: dict[str, float] = {}
        self.rows = 0

    @contextlib.contextmanager
    def part(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def batch_done(self, rows: int) -> None:
        self.rows += rows
        if self.path:
            self.path.write_text(json.dumps({"rows": self.rows, **self.seconds}))


def embed_valid(
    batch, embedder, mapping, image_dim: int, repeated: pa.Table, clock: Clock
) -> pa.Table:
    """product_id + embedding of a raw catalog batch's valid rows (invalid rows dropped)."""
    with clock.part("check"):
        table, reasons = check_batch(batch, mapping, image_dim, repeated)
        valid = table.filter(pc.is_null(reasons))
    with clock.part("encode"):
        dim = embedder.checkpoint.model.config.output_dim
        vectors = embedder.vectors(valid) if valid.num_rows else np.empty((0, dim), np.float32)
    with clock.part("convert"):
        out = pa.table({PRODUCT_ID: valid.column(PRODUCT_ID), "embedding": vector_column(vectors)})
    clock.batch_done(batch.num_rows)
    return out


def run_in_process(inputs: Inputs, out: Path) -> dict:
    started = time.perf_counter()
    embedder = inputs.embedder(THREADS)
    clock, parts = Clock(inputs.profile), []
    for file in inputs.files:
        for batch in pq.ParquetFile(file).iter_batches(BATCH_ROWS, columns=inputs.columns):
            parts.append(
                embed_valid(
                    batch, embedder, inputs.mapping, inputs.image_dim, inputs.repeated, clock
                )
            )
    out.mkdir(parents=True)
    rows = pa.concat_tables(parts)
    pq.write_table(rows, out / "part-00000.parquet", compression="snappy")
    return {"work_s": time.perf_counter() - started, "engine_start_s": 0.0}


def udf_predict_fn(inputs: Inputs):
    """predict_batch_udf's `make_predict_fn`: loads the checkpoint (once per Python worker: the
    udf caches what this returns) and returns a predict function taking one numpy array per
    input column, returning the conformed product ids, vectors (zeros where a row is invalid)
    and each row's reasons (null: valid)."""
    model_dir, version = inputs.model_dir, inputs.model_version
    mapping, image_dim, repeated = inputs.mapping, inputs.image_dim, inputs.repeated
    columns, types, profile = list(inputs.columns), list(inputs.types), inputs.profile

    def make_predict_fn():
        import torch

        from itemsage_core.embedding.batch_embedder import BatchEmbedder

        torch.set_num_threads(1)  # one task slot = one core, as the job's tasks
        embedder = BatchEmbedder.for_model(model_dir, version, BATCH, device="cpu")
        dim = embedder.checkpoint.model.config.output_dim
        clock = Clock(profile)

        def predict(*arrays: np.ndarray) -> dict[str, np.ndarray]:
            with clock.part("convert"):  # the udf's numpy arrays back to Arrow
                raw = pa.table(
                    [pa.array(a, type=t, from_pandas=True) for a, t in zip(arrays, types)],
                    names=columns,
                )
            with clock.part("check"):
                table, reasons = check_batch(raw, mapping, image_dim, repeated)
                ok = pc.is_null(reasons).to_numpy(zero_copy_only=False)
            with clock.part("encode"):
                vectors = np.zeros((table.num_rows, dim), np.float32)
                if ok.any():
                    vectors[ok] = embedder.vectors(table.filter(ok))
            with clock.part("convert"):
                out = {
                    PRODUCT_ID: table.column(PRODUCT_ID).to_numpy(zero_copy_only=False),
                    "embedding": vectors,
                    "reason": reasons.to_numpy(zero_copy_only=False),
                }
            clock.batch_done(table.num_rows)
            return out

        # The udf counts the predict function's parameters to pass one array per column.
        predict.__signature__ = inspect.Signature(
            [
                inspect.Parameter(f"c{i}", inspect.Parameter.POSITIONAL_ONLY)
                for i in range(len(columns))
            ]
        )
        return predict

    return make_predict_fn


def run_spark_udf(inputs: Inputs, out: Path) -> dict:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    from jobs.spark_session import get_spark

    began = time.perf_counter()
    # Spark's defaults otherwise: Arrow batches of 1,024, 2,048 or 10,000 (the default) rows
    # (spark.sql.execution.arrow.maxRecordsPerBatch) ran within noise of each other at 20k.
    spark = get_spark("peers-predict-batch-udf", f"local[{THREADS}]")
    started = time.perf_counter()
    frame = spark.read.parquet(*inputs.files).select(*inputs.columns)
    if inputs.row_groups < THREADS:
        # Spark reads a Parquet row group in one task: spread a catalog of fewer row groups
        # than task slots over the slots (the job cuts row groups into row ranges instead).
        frame = frame.repartition(THREADS)
    embed = predict_batch_udf(
        udf_predict_fn(inputs),
        return_type=StructType(
            [
                StructField(PRODUCT_ID, StringType()),
                StructField("embedding", ArrayType(FloatType())),
                StructField("reason", StringType()),
            ]
        ),
        batch_size=BATCH,
        # None per column: pass each column as it comes (strings, lists of strings, lists of
        # image vectors of varying count cannot be fixed-shape tensors).
        input_tensor_shapes=[None] * len(inputs.columns),
    )
    # Nondeterministic, so that the optimizer neither pushes the filter on `reason` below the
    # repartition nor evaluates the udf twice (once for the filter, once for the columns): seen
    # in the plan (`explain()`) of the deterministic udf.
    embed = embed.asNondeterministic()
    rows = frame.select(embed(*inputs.columns).alias("r")).select("r.*")
    rows = rows.where(F.col("reason").isNull()).select(PRODUCT_ID, "embedding")
    rows.write.mode("overwrite").parquet(str(out))
    work = time.perf_counter() - started
    spark.stop()
    return {"work_s": work, "engine_start_s": started - began}


class RayEmbedder:
    """map_batches' callable class: one checkpoint per actor, 1 torch thread (1 CPU each)."""

    def __init__(self, model_dir, model_version, mapping, image_dim, repeated, profile):
        import torch

        from itemsage_core.embedding.batch_embedder import BatchEmbedder

        torch.set_num_threads(1)
        self.embedder = BatchEmbedder.for_model(model_dir, model_version, BATCH, device="cpu")
        self.mapping, self.image_dim, self.repeated = mapping, image_dim, repeated
        self.clock = Clock(profile)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return embed_valid(
            batch, self.embedder, self.mapping, self.image_dim, self.repeated, self.clock
        )


def run_ray(inputs: Inputs, out: Path, delta: bool) -> dict:
    import ray
    import ray.data

    began = time.perf_counter()
    # A logical CPU for each actor, and one for the read and write tasks: with the actors holding
    # every CPU those could never be scheduled and the dataset hangs (ray-project/ray#44687).
    # Every process still shares the same 2 cores.
    ray.init(num_cpus=THREADS + 1, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    started = time.perf_counter()
    ds = ray.data.read_parquet(inputs.files).select_columns(inputs.columns)
    # Ray reads a Parquet row group into one block, and an actor takes a block at a time: cut the
    # blocks (streaming, no shuffle) so that both actors get work and the stages overlap.
    ds = ds.repartition(target_num_rows_per_block=RAY_BLOCK_ROWS)
    ds = ds.map_batches(
        RayEmbedder,
        fn_constructor_kwargs={
            "model_dir": inputs.model_dir,
            "model_version": inputs.model_version,
            "mapping": inputs.mapping,
            "image_dim": inputs.image_dim,
            "repeated": inputs.repeated,
            "profile": inputs.profile,
        },
        compute=ray.data.ActorPoolStrategy(size=THREADS),
        num_cpus=1,
        batch_size=BATCH,
        batch_format="pyarrow",
        zero_copy_batch=True,
    )
    if delta:
        from ray.data import SaveMode

        ds.write_delta(str(out), mode=SaveMode.OVERWRITE)
    else:
        ds.write_parquet(str(out))
    work = time.perf_counter() - started
    ray.shutdown()
    return {"work_s": work, "engine_start_s": started - began}


def child(args) -> None:
    inputs = Inputs(args.catalog, args.model, args.mapping, args.profile_dir)
    out = Path(args.out_dir)
    if args.run == "in_process":
        result = run_in_process(inputs, out)
    elif args.run == "spark_udf":
        result = run_spark_udf(inputs, out)
    elif args.run in ("ray_parquet", "ray_delta"):
        result = run_ray(inputs, out, delta=args.run == "ray_delta")
    else:
        raise SystemExit(f"unknown system {args.run}")
    Path(args.result).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The parent: catalogs, checkpoints, one child per system, memory, checks, the table.
# --------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, session id, start time) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3]), fields[19]


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class TreeMemory(threading.Thread):
    """Samples the summed PSS of a run's processes: the child, all its descendants, and any
    process whose environment carries the run's tag (one that left the tree, e.g. a daemon
    re-parented to init; only this session's processes are looked at for the tag). Keeps the
    peak, its breakdown by kind of process, and the names of processes seen outside the tree."""

    def __init__(self, root: int, tag: str):
        super().__init__(daemon=True)
        self.root, self.tag = root, f"{TAG}={tag}".encode()
        self.peak_kib, self.samples, self.most = 0, 0, 0
        self.outside: set[str] = set()
        self.at_peak: dict[str, float] = {}
        self._kinds: dict[int, str] = {}
        self._tagged: dict[tuple[int, str], bool] = {}
        self._stop_event = threading.Event()
        self.session = os.getsid(0)

    def processes(self) -> tuple[set[int], set[int]]:
        parents, tagged = {}, set()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = _stat(pid)
            if stat is None:
                continue
            parents[pid] = stat[0]
            key = (pid, stat[2])
            if stat[1] != self.session:
                continue
            if key not in self._tagged:
                try:
                    self._tagged[key] = self.tag in Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    self._tagged[key] = False
            if self._tagged[key]:
                tagged.add(pid)
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        tree, stack = set(), [self.root]
        while stack:
            pid = stack.pop()
            if pid in parents and pid not in tree:
                tree.add(pid)
                stack.extend(children.get(pid, []))
        return tree, tagged

    def sample(self) -> set[int]:
        tree, tagged = self.processes()
        everyone = tree | tagged
        self.outside |= {_name(pid) for pid in tagged - tree}
        for pid in everyone:  # the last kind read while the process was alive
            self._kinds[pid] = self.kind(pid) or self._kinds.get(pid, "?")
        pss = {pid: _pss_kib(pid) for pid in everyone}
        if sum(pss.values()) > self.peak_kib:
            self.peak_kib = sum(pss.values())
            self.at_peak = {}
            for pid, kib in pss.items():
                kind = self._kinds[pid]
                self.at_peak[kind] = self.at_peak.get(kind, 0) + kib / 1024
        self.samples += 1
        self.most = max(self.most, len(everyone))
        return tagged

    def kind(self, pid: int) -> str | None:
        """What a process is, for the breakdown at the peak (None: it is gone)."""
        if pid == self.root:
            return "driver"
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        if b"pyspark.daemon" in command:
            return "pyspark workers"
        return "ray workers" if name.startswith("ray::") else name

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def launch(command: list[str], log: Path, env: dict, timeout: float) -> dict:
    """Run one system's child; its wall seconds, peak memory of its processes, and leftovers.
    A child still running after `timeout` seconds is ended, with every process of its run."""
    tag = uuid.uuid4().hex
    with open(log, "w") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env={**env, TAG: tag}
        )
        memory = TreeMemory(proc.pid, tag)
        memory.start()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            tree, tagged = memory.processes()
            for pid in tree | tagged:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            code = proc.wait()
            sink.write(f"\n[peers] ended after {timeout:.0f} s\n")
        wall = time.perf_counter() - started
        memory.stop()
    # Processes of the run still alive after it exited: wait a little, then end them by pid.
    left: set[int] = set()
    for _ in range(25):
        left = memory.processes()[1]
        if not left:
            break
        time.sleep(0.2)
    names = sorted({_name(pid) for pid in left})
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    return {
        "returncode": code,
        "wall_s": wall,
        "peak_mem_mib": memory.peak_kib / 1024,
        "peak_by_process_mib": {k: round(v) for k, v in sorted(memory.at_peak.items())},
        "max_processes": memory.most,
        "memory_samples": memory.samples,
        "outside_tree": sorted(memory.outside),
        "left_running": names,
    }


def read_vectors(path: Path, delta: bool) -> tuple[pa.Array, np.ndarray]:
    """(product ids, (n, dim) vectors) sorted by product id, from a Delta table or Parquet."""
    if delta:
        from itemsage_core.embedding.embeddings_table import read_table

        table = read_table(str(path), columns=[PRODUCT_ID, "embedding"])
    else:
        table = pq.read_table(path, columns=[PRODUCT_ID, "embedding"])
    table = table.take(pc.sort_indices(table, [(PRODUCT_ID, "ascending")]))
    ids = table.column(PRODUCT_ID).combine_chunks().cast(pa.string())
    return ids, vectors_of(table.column("embedding"))


def compare(reference: tuple[pa.Array, np.ndarray], peer: tuple[pa.Array, np.ndarray]) -> dict:
    ref_ids, ref_vectors = reference
    ids, vectors = peer
    same_ids = len(ids) == len(ref_ids) and ids.equals(ref_ids)
    out = {
        "rows_out": len(ids),
        "distinct_ids": len(pc.unique(ids)),
        "same_ids": same_ids,
        "max_abs_diff": None,
        "bit_identical": None,
    }
    if same_ids and vectors.shape == ref_vectors.shape:
        out["max_abs_diff"] = float(np.abs(vectors - ref_vectors).max()) if len(ids) else 0.0
        out["bit_identical"] = bool(
            np.array_equal(vectors.view(np.uint32), ref_vectors.view(np.uint32))
        )
    return out


def prepare_synthetic(products: int, workdir: Path, progress) -> dict:
    from bench.workload import paper_model, write_catalog
    from itemsage_core.contracts.catalog_contract import validate_catalog

    progress(f"synthetic world, {products:,} products: catalog and checkpoint")
    catalog = workdir / f"catalog-{products}"
    sample = write_catalog(products, catalog)
    paper_model(validate_catalog(sample).valid, workdir / f"model-{products}")
    return {
        "name": f"synthetic {products:,}",
        "key": f"synthetic-{products}",
        "catalog": str(catalog),
        "model": str(workdir / f"model-{products}"),
        "mapping": None,
    }


def prepare_flipkart(source: Path, rows: int | None, workdir: Path, progress) -> dict:
    from bench.workload import IMAGE_DIM, paper_model

    progress(f"Flipkart catalog {source}: checkpoint from its valid rows")
    catalog = source
    if rows is not None:
        catalog = workdir / f"flipkart-{rows}" / "part-00000.parquet"
        catalog.parent.mkdir(parents=True)
        pq.write_table(pq.read_table(source).slice(0, rows), catalog)
    mapping = load_mapping(FLIPKART_MAPPING)
    raw = pq.read_table(catalog)
    ids = conformed_ids(raw, mapping)
    table, reasons = check_batch(raw, mapping, IMAGE_DIM, repeated_ids_of(ids))
    paper_model(table.filter(pc.is_null(reasons)), workdir / "model-flipkart")
    return {
        "name": "Flipkart" if rows is None else f"Flipkart (first {rows:,})",
        "key": "flipkart",
        "catalog": str(catalog),
        "model": str(workdir / "model-flipkart"),
        "mapping": str(FLIPKART_MAPPING),
    }


def in_function(profile: Path) -> dict:
    """The Clock files of a run's processes, summed: rows and seconds per part, processes."""
    total: dict = {"processes": 0}
    for path in profile.glob("*.json"):
        total["processes"] += 1
        for key, value in json.loads(path.read_text()).items():
            total[key] = total.get(key, 0) + value
    return total


def command_for(system: str, case: dict, out: Path, result: Path, profile: Path) -> list[str]:
    if system == "ours":
        command = [
            sys.executable,
            "-m",
            "itemsage_cli.main",
            "embed",
            "--catalog",
            case["catalog"],
            "--model",
            case["model"],
            "--table",
            str(out),
            "--master",
            f"local[{THREADS}]",
            "--batch-size",
            str(BATCH),
            "--summary-json",
            str(result),
        ]
        return command + (["--mapping", case["mapping"]] if case["mapping"] else [])
    command = [sys.executable, str(Path(__file__).resolve()), "--run", system]
    command += ["--catalog", case["catalog"], "--model", case["model"]]
    command += ["--out-dir", str(out), "--result", str(result)]
    command += ["--profile-dir", str(profile)]
    return command + (["--mapping", case["mapping"]] if case["mapping"] else [])


def run_system(
    system: str, case: dict, valid: int, workdir: Path, timeout: float, progress
) -> dict:
    """One run of one system on one catalog: its figures (not yet checked)."""
    out = workdir / f"out-{case['key']}-{system}"
    result = workdir / f"result-{case['key']}-{system}.json"
    log = workdir / f"log-{case['key']}-{system}.txt"
    profile = workdir / f"profile-{case['key']}-{system}"
    for stale in (out, Path(str(out) + "_quarantine"), profile):
        shutil.rmtree(stale, ignore_errors=True)
    result.unlink(missing_ok=True)
    profile.mkdir()
    env = {**os.environ, "ITEMSAGE_SPARK_LOG_LEVEL": "ERROR", "RAY_USAGE_STATS_ENABLED": "0"}
    load = Path("/proc/loadavg").read_text().split()[0]
    progress(f"{case['name']}: {system} (load average {load}) ...")
    run = launch(command_for(system, case, out, result, profile), log, env, timeout)
    run["load_before"] = float(load)
    if run["returncode"] != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{system} failed on {case['name']} (exit {run['returncode']}):\n{tail}")
    own = json.loads(result.read_text())
    if system == "ours":
        run["work_s"] = own["seconds"]["total_s"]
        run["engine_start_s"] = None
        run["embedded"], run["quarantined"] = own["embedded"], own.get("quarantined")
    else:
        run.update(own)
        run["in_function"] = in_function(profile)
    run["pps"] = valid / run["wall_s"]
    run["work_pps"] = valid / run["work_s"]
    run["vectors"], run["delta"] = str(out), system in ("ours", "ray_delta")
    progress(
        f"{case['name']}: {system}: {run['wall_s']:.1f} s wall, {run['work_s']:.1f} s work, "
        f"peak {run['peak_mem_mib']:.0f} MiB"
    )
    return run


def check_run(run: dict, valid: int, reference: str, vectors) -> list[str]:
    """Compare a run's output with the reference's vectors; its problems (none: passed)."""
    run.update(compare(vectors, read_vectors(Path(run["vectors"]), run["delta"])))
    run["reference"] = reference
    problems = []
    if run["rows_out"] != valid:
        problems.append(f"{run['rows_out']} rows out, {valid} valid rows in")
    if run["distinct_ids"] != run["rows_out"]:
        problems.append("product ids repeat")
    if not run["same_ids"]:
        problems.append(f"product ids differ from {reference}'s")
    elif run["max_abs_diff"] > TOLERANCE:
        problems.append(f"vectors differ from {reference}'s by {run['max_abs_diff']:.3g}")
    return problems


def bench_case(
    case: dict, systems: list[str], repeats: int, workdir: Path, timeout: float, progress
) -> dict:
    """Every system on one catalog, `repeats` rounds (systems interleaved, so that a drift of the
    machine's speed touches all), each run checked against the reference (ours, else the first
    system) of the first round. A system's figures: the median run by wall time, the median
    work seconds, and the highest peak memory and largest difference of all its runs."""
    mapping = load_mapping(case["mapping"]) if case["mapping"] else None
    report = validate_local_catalog(case["catalog"], mapping)
    rows_in, valid = report.rows, report.valid
    progress(f"{case['name']}: {rows_in:,} rows, {valid:,} valid")
    runs: dict[str, list[dict]] = {system: [] for system in systems}
    reference, vectors, failures = None, None, []
    for _ in range(repeats):
        for system in systems:
            run = run_system(system, case, valid, workdir, timeout, progress)
            if reference is None:
                reference = system
                vectors = read_vectors(Path(run["vectors"]), run["delta"])
            run["problems"] = check_run(run, valid, reference, vectors)
            failures += [f"{case['name']} {system}: {p}" for p in run["problems"]]
            runs[system].append(run)
    results = {}
    for system, done in runs.items():
        median = sorted(done, key=lambda r: r["wall_s"])[(len(done) - 1) // 2]
        diffs = [r["max_abs_diff"] for r in done if r["max_abs_diff"] is not None]
        highest = max(done, key=lambda r: r["peak_mem_mib"])
        results[system] = {
            **median,
            "work_s": float(np.median([r["work_s"] for r in done])),
            "peak_mem_mib": highest["peak_mem_mib"],
            "peak_by_process_mib": highest["peak_by_process_mib"],
            "max_abs_diff": max(diffs) if diffs else None,
            "bit_identical": all(r["bit_identical"] for r in done),
            "runs": [{k: r[k] for k in RUN_KEYS if k in r} for r in done],
        }
        results[system]["work_pps"] = valid / results[system]["work_s"]
    return {
        "catalog": case["name"],
        "rows_in": rows_in,
        "valid": valid,
        "systems": results,
        "failures": failures,
    }


def busy_share(run: dict) -> float | None:
    """Share of the work seconds of its processes that a system spent in the per-batch work."""
    parts = run.get("in_function") or {}
    seconds = sum(v for k, v in parts.items() if k not in ("rows", "processes"))
    processes = min(parts.get("processes", 0), THREADS)
    return seconds / (run["work_s"] * processes) if processes else None


def print_table(cases: list[dict]) -> None:
    head = (
        f"{'catalog':22s} {'system':12s} {'rows':>8s} {'prod/s':>8s} {'wall s':>7s} "
        f"{'work s':>7s} {'work p/s':>8s} {'in fn':>6s} {'peak MiB':>9s} {'max|diff|':>10s} "
        f"{'exact':>6s}"
    )
    print(head)
    print("-" * len(head))
    for case in cases:
        for system, run in case["systems"].items():
            diff, busy = run.get("max_abs_diff"), busy_share(run)
            print(
                f"{case['catalog']:22s} {system:12s} {run['rows_out']:>8,d} {run['pps']:>8,.0f} "
                f"{run['wall_s']:>7.1f} {run['work_s']:>7.1f} {run['work_pps']:>8,.0f} "
                f"{'-' if busy is None else f'{busy:.0%}':>6s} "
                f"{run['peak_mem_mib']:>9,.0f} "
                f"{'-' if diff is None else f'{diff:.2g}':>10s} "
                f"{'yes' if run.get('bit_identical') else 'no':>6s}"
            )
    print("peak memory by process (MiB):")
    for case in cases:
        for system, run in case["systems"].items():
            parts = ", ".join(f"{k} {v:,}" for k, v in run["peak_by_process_mib"].items() if v >= 1)
            print(f"  {case['catalog']:22s} {system:12s} {parts}")
    print(
        "prod/s: valid rows / wall s (start-up included); work s: after the engine started; "
        "in fn: share of the work s\nof its processes spent in the per-batch work (check, "
        "encode, conversions); peak: summed PSS; max|diff|, exact: against ours."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument(
        "--flipkart",
        default=str(ROOT.parent / "shared/data/flipkart_products.parquet"),
        help="the Flipkart sample ('' to skip)",
    )
    parser.add_argument("--flipkart-rows", type=int, default=None, help="only its first N rows")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of runs (figures: the median run)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir's outputs")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds before a system's run is ended"
    )
    parser.add_argument("--out", default=str(ROOT / "bench/results/peers.json"))
    # A child's arguments.
    parser.add_argument("--run", choices=SYSTEMS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mapping", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--profile-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        child(args)
        return

    def progress(message: str) -> None:
        print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    systems = [s for s in SYSTEMS if s in args.systems]
    began = time.perf_counter()
    cases = []
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="itemsage-peers-", dir=args.workdir)
    try:
        for products in args.products:
            workdir = Path(tmp) / f"synthetic-{products}"
            workdir.mkdir()
            case = prepare_synthetic(products, workdir, progress)
            cases.append(bench_case(case, systems, args.repeats, workdir, args.timeout, progress))
        flipkart = Path(args.flipkart) if args.flipkart else None
        if flipkart and flipkart.exists():
            workdir = Path(tmp) / "flipkart"
            workdir.mkdir()
            case = prepare_flipkart(flipkart, args.flipkart_rows, workdir, progress)
            cases.append(bench_case(case, systems, args.repeats, workdir, args.timeout, progress))
        elif flipkart:
            progress(f"no Flipkart catalog at {flipkart}: skipped")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    from bench.workload import cpu_model

    report = {
        "threads": THREADS,
        "batch_size": BATCH,
        "tolerance": TOLERANCE,
        "repeats": args.repeats,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "seconds": time.perf_counter() - began,
        "cases": cases,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(cases)
    failures = [f for case in cases for f in case["failures"]]
    print(
        f"{THREADS} threads, encoder batch {BATCH}, on {cpu_model()}; "
        f"{report['seconds']:.0f} s in all; written to {args.out}"
    )
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
