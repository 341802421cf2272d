"""Where tokens sit in embedding space: the input embedding table, token subsets, neighbours, analogies,
contextual states through the layers and each family's position encoding (``space``), and the 2-D/3-D
projections of embedding rows (PCA, UMAP, t-SNE) with their bounded, on-disk cache (``projections``).
"""
