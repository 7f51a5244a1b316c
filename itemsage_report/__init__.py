"""The run report (`itemsage report`): a static HTML page with PNG plots of a deployment's
published indexes, its model's training and its embedding runs, readable from disk.

`gather` measures and collects the figures (one JSON-ready dict, written as report.json),
`figures` draws them, `page` lays them out, `report` writes the whole into a folder or an object
store prefix, the page last."""

QUERIES = 500  # products per surface sampled as queries by default
