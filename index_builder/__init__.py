"""Per-surface sharded HNSW indexes (plain hnswlib / faiss code, no Spark)."""
