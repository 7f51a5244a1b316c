"""What the encoder reads: text tokens (word unigrams, bigrams, character trigrams), the
vocabulary, products encoded as token bags, image matrices and dense features, vocabulary
coverage, TF-IDF (the catalog objective's lexical teacher and evaluate-catalog's baseline), the
teachers' neighbours, and sentence embeddings of product text (`itemsage featurize`). May import
`errors`, `storage` and `contracts`."""
