"""Which input tokens drove one prediction: the predictions a text offers, their score as a function of
the input embeddings and the per-token attribution of one prediction or of a whole generation
(``attribute``), and the captum methods, registered by name, that compute it (``methods``).
"""
