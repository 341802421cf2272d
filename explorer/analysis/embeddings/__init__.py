"""Where tokens sit in embedding space: the input embedding table, token subsets, neighbours, analogies,
contextual states and each family's position encoding (``space``); the 2-D/3-D projections of embedding
rows (PCA, UMAP, t-SNE) with their bounded, on-disk cache (``projections``), and a projection too slow
to wait for shown as PCA first while the full one is computed in the background (``staged``); nearest tokens and analogies
with their labels (``neighbours``); the token map, a projection with a text's tokens placed on it
(``token_map``); and a text's states through the layers, or one word followed through two texts
(``contextual``).
"""
