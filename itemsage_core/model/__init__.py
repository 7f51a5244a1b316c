"""The ItemSage encoder (hashed n-gram embeddings, one transformer layer over [CLS]), its losses,
inference on a device, and checkpoints (weights, vocabulary, manifest). May import `errors`,
`storage`, `contracts` and `features`."""
