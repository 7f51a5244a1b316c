"""Training data prepared on Spark: the same valid products and vocabulary as in one process."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from itemsage_core.contracts.catalog_contract import validate_catalog
from itemsage_core.contracts.column_mapping import load_mapping
from itemsage_core.features.vocabulary import VocabConfig, build_vocabulary
from itemsage_core.storage.parquet_io import read_parquet

pytestmark = pytest.mark.spark

SMALL = VocabConfig(unigrams=60, bigrams=40, trigrams=50, min_count=1)


@pytest.mark.parametrize("config", [VocabConfig(), SMALL], ids=["default", "small"])
def test_vocabulary_on_spark_equals_the_in_process_one(spark, small_world_dir, config):
    from jobs.training_data import valid_products, vocabulary_on_spark

    catalog = str(small_world_dir / "catalog")
    expected = build_vocabulary(validate_catalog(read_parquet(catalog)).valid, config)
    assert vocabulary_on_spark(valid_products(spark, catalog), config).tokens == expected.tokens


def test_vocabulary_on_spark_of_a_real_catalog(spark, flipkart_path, flipkart_mapping):
    from jobs.training_data import valid_products, vocabulary_on_spark

    mapping = load_mapping(flipkart_mapping)
    valid = validate_catalog(mapping.apply(pq.read_table(flipkart_path))).valid
    products = valid_products(spark, str(flipkart_path), mapping)
    assert products.count() == valid.num_rows
    for config in (VocabConfig(), SMALL):
        found = vocabulary_on_spark(products, config)
        assert found.tokens == build_vocabulary(valid, config).tokens
