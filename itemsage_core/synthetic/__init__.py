"""A deterministic synthetic world (catalog and engagement log with a known structure) for
demos, tests and benchmarks. May import `errors`, `storage` and `contracts`."""
