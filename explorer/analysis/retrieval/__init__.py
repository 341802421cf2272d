"""Retrieval-augmented generation seen from inside: the documents searched and their chunking
(``documents``), text embeddings as mean-pooled hidden states of any loaded model (``embedding``), the
index of one (model, document set, chunking, layer), built once and cached (``index``), exact search by
cosine similarity, by BM25 and by their reciprocal-rank fusion, with a 2-D map (``search``), and the
model's answer with and without the retrieved passages in its prompt (``generation``), and that answer
attributed to the prompt's passages and question (``attribution``).
"""
