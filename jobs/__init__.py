"""Spark wiring only, reader -> mapper -> writer, each piece calling itemsage_core or
index_builder; docs/architecture.md maps every module (the readers, the embedding, featurize,
index, refresh, neighbours, training-data and distributed-training jobs, their committers and
the session, progress and failure helpers). Imports nothing from itemsage_cli."""
