"""The `itemsage` command-line interface."""
