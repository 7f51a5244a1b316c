"""ItemSage core: data contracts, synthetic world, encoder and trainer (plain Python, no Spark)."""
