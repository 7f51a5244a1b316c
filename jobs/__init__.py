"""Spark entry points: thin wiring of itemsage_core and index_builder into Spark jobs."""
