"""The data contracts and their rules: column types, the catalog and engagement contracts, the
row rules and validation reports, dense feature columns, the column mapping from a user's columns
to the contract, and the batch-by-batch catalog check every path shares. May import `errors` and
`storage`."""
