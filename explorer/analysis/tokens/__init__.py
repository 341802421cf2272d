"""How a text becomes tokens: the token table's rows (``table``), counts and tokenizer comparisons
(``counts``), byte-pair encoding replayed merge by merge and trained on a small corpus (``bpe``), and the
bundled public-domain texts that corpus and the embeddings view's frequency ranking read (``texts``).
The coloured token spans are a view: ``explorer.plots.tokens`` draws them.
"""
