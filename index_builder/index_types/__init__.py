"""Index types as plugins: `shard` declares what a type provides (`IndexType`) and what its
built or loaded shard answers (`Shard`); `hnsw`, `hnsw_sq8` and `ivf_pq` are the types
(`faiss_shard`: what the faiss ones share); `registry` keys them by name, the one place type
names are compared. A new type is one module here plus its line in the registry."""
