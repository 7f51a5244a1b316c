"""Vocabulary coverage (itemsage_core/features/vocab_coverage.py) and the embedding job's warning
when the model's vocabulary was built from other text."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from itemsage_core.contracts.catalog_contract import conform_catalog
from itemsage_core.contracts.column_mapping import load_mapping
from itemsage_core.features.vocab_coverage import (
    add_coverage,
    coverage_summary,
    low_coverage_warning,
)
from itemsage_core.features.vocabulary import Vocabulary

TITLES = ["Red shoe", "Blue shoe, for kids!"]
BRANDS = ["Acme", None]


def _tiny():
    table = conform_catalog(pa.table({"product_id": ["a", "b"], "title": TITLES, "brand": BRANDS}))
    vocab = Vocabulary(
        {
            "title": {"unigram": ["red", "shoe"], "bigram": ["red shoe"]},
            "brand": {"unigram": ["nike"]},
        }
    )
    return table, vocab


def _words(texts):
    return [w for t in texts if t for w in re.split(r"[^\w]+", t.lower()) if w]


def test_coverage_summary_matches_a_direct_count():
    table, vocab = _tiny()
    counts = vocab.encode(table).coverage
    titles, brands = _words(TITLES), _words(BRANDS)
    known_titles = sum(w in ("red", "shoe") for w in titles)
    assert counts["title"]["unigram"] == [known_titles, len(titles)] == [3, 6]
    assert counts["brand"]["unigram"] == [0, len(brands)] == [0, 1]
    assert counts["title"]["bigram"] == [1, 4]  # red shoe | blue shoe, shoe for, for kids

    summary = coverage_summary(counts, 0.5)
    assert summary["word_coverage"] == round(3 / 7, 4) and summary["words"] == 7
    assert summary["per_feature"] == {"title": 0.5, "brand": 0.0}  # features with words only
    assert summary["per_kind"]["bigram"] == 0.25 and summary["low"]
    assert "brand 0%" in low_coverage_warning(summary, "m1")
    assert not coverage_summary(counts, 0.4)["low"]
    assert low_coverage_warning(coverage_summary(counts, 0), "m1") is None  # 0: off


def test_add_coverage_sums_batches():
    table, vocab = _tiny()
    total = add_coverage({}, vocab.encode(table.slice(0, 1)).coverage)
    add_coverage(total, vocab.encode(table.slice(1)).coverage)
    assert total == vocab.encode(table).coverage
    assert coverage_summary({})["word_coverage"] is None and not coverage_summary({})["low"]


@pytest.mark.spark
def test_a_model_built_on_other_text_warns_and_still_commits(
    spark, tmp_path, flipkart_path, tiny_model_dir
):
    from itemsage_core.embedding.embed_run import EmbedConfig
    from jobs.embed_catalog import embed_catalog

    catalog = tmp_path / "catalog"
    catalog.mkdir()
    pq.write_table(pq.read_table(flipkart_path).slice(0, 300), catalog / "part-0.parquet")
    table_uri = str(tmp_path / "flipkart")
    messages = []
    config = EmbedConfig(
        str(catalog), str(tiny_model_dir), table_uri, load_mapping("conf/mappings/flipkart.toml")
    )
    summary = embed_catalog(spark, config, progress=messages.append)
    coverage = summary["vocab_coverage"]
    assert coverage["word_coverage"] < 0.5 and coverage["low"] and coverage["min_coverage"] == 0.5
    assert summary["status"] == "committed"
    warnings = [i for i, m in enumerate(messages) if m.startswith("warning:")]
    assert len(warnings) == 1
    warning = messages[warnings[0]]
    assert summary["model_version"] in warning and "title" in warning
    committed = next(i for i, m in enumerate(messages) if m.startswith("committed"))
    assert warnings[0] < committed
    metadata = json.loads(DeltaTable(table_uri).history(1)[0]["itemsage"])
    assert metadata["vocab_coverage"] == coverage


@pytest.mark.spark
def test_the_models_own_catalog_does_not_warn(spark, tmp_path, small_world_dir, tiny_model_dir):
    from itemsage_core.embedding.embed_run import EmbedConfig
    from jobs.embed_catalog import embed_catalog

    messages = []
    config = EmbedConfig(
        str(small_world_dir / "catalog"), str(tiny_model_dir), str(tmp_path / "embeddings")
    )
    summary = embed_catalog(spark, config, progress=messages.append)
    coverage = summary["vocab_coverage"]
    assert coverage["word_coverage"] >= 0.9 and not coverage["low"]
    assert not any(m.startswith("warning:") for m in messages)
