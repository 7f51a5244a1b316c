"""Making a model: engagement examples, the multi-task and catalog objectives (each a task's loss
on batches in memory or streamed) and their training loop, held-out evaluation (engagement
recall, catalog labels against TF-IDF), and `model_runs`, the train-and-save recipe the CLI
calls. May import every lower layer (`errors`, `storage`, `contracts`, `features`, `model`), not
`embedding` or `synthetic`."""
