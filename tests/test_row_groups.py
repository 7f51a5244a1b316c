"""The embedding job's work items: Parquet row groups, cut into row ranges, read back exactly."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from itemsage_core.embedding.embed_task import row_group_slices
from itemsage_core.storage.parquet_io import read_row_group, row_groups


def test_row_group_slices_cover_every_row_once(tmp_path):
    table = pa.table({"product_id": [f"P{i}" for i in range(25_000)]})
    pq.write_table(table.slice(0, 15_000), tmp_path / "a.parquet", row_group_size=7_000)
    pq.write_table(table.slice(15_000), tmp_path / "b.parquet", row_group_size=10_000)
    groups = row_groups(tmp_path)
    assert [(g, n) for _, g, n in groups] == [(0, 7000), (1, 7000), (2, 1000), (0, 10000)]
    for slots in (1, 2, 8):
        items = row_group_slices(groups, slots, min_rows=2_000)
        ids = [
            pid
            for file, group, start, stop in items
            for batch in read_row_group(file, group, 3_000, start, stop)
            for pid in batch.column("product_id").to_pylist()
        ]
        assert ids == table.column("product_id").to_pylist()
    assert len(row_group_slices(groups, 8, min_rows=2_000)) > len(groups)
    assert len(row_group_slices(groups, 1, min_rows=2_000)) == len(groups)
