"""Embedding a catalog with a trained model: one task's work without Spark (check, embed or
quarantine, write data files), the per-worker batch embedder, content hashes, the run's rules
(run id, quarantine gate, incremental counts), the embeddings table contract with its Delta
commits, and one featurize task with its run's rules (`itemsage featurize`). May import every
lower layer (`errors`, `storage`, `contracts`, `features`, `model`), not `training` or
`synthetic`."""
