"""What the encoder reads: text tokens (word unigrams, bigrams, character trigrams), the
vocabulary, products encoded as token bags and image matrices, vocabulary coverage, and the
lexical (TF-IDF) neighbours that supervise catalog training and serve as its baseline. May import
`errors`, `storage` and `contracts`."""
