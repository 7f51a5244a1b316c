"""Per-surface sharded HNSW indexes (plain hnswlib / faiss code, no Spark).

surfaces: the config; build_config: a run's options; partitioning: which group (build task)
each product goes to; plan: a surface's build plan; shard_build: one shard's build and recall;
index_types: the index types (the Shard protocol, one module per type, the registry by name);
build_release: manifest, recall gate, publish or discard; build_run: the run summary; layout:
keys, build ids, manifests, CURRENT pointers on any filesystem; build_files: a build's files
checked (and fetched into a local cache from object stores); index_reader: a loaded sharded
build and its queries.
"""
