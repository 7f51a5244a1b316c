"""ItemSage's core, plain Python/PyTorch/NumPy/Arrow (no Spark), in layers from the bottom up:
`errors`; `storage` (files, URIs, Parquet, Arrow IPC); `contracts` (schemas, row rules, column
mapping, validation reports); `features` (tokens, vocabulary, encoded products); `model` (the
encoder, losses, inference, checkpoints); then `training`, `embedding` and `synthetic`, which use
the layers below them but not each other. A layer imports only the layers below it
(tests/test_layering.py checks the import graph); docs/architecture.md has the picture."""
