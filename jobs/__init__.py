"""Spark wiring only, reader -> mapper -> writer, each piece calling itemsage_core or
index_builder: catalog_readers (how the embedding tasks get rows), embed_catalog (the embedding
job's recipe), embed_committers (deltalake or Delta's Spark connector), build_indexes (the index
job's recipe), catalog_frame and delta_frame (the catalog and the table as DataFrames),
spark_session, progress, spark_failures, crash_points. Imports nothing from itemsage_cli."""
