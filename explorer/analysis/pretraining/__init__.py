"""Training a model, for the Training view: a tiny model of each family trained live from scratch on the
bundled texts with its own objective (``trainer``, settings and model builders in ``configs``, the
training and held-out text in ``corpus``, checkpoint probes such as samples and induction scores in
``probes``), power-law fits to the bundled scaling study (``scaling``), and preference tuning of a
decoder with DPO or IPO through a LoRA adapter (``preferences``); a trained model opened in the other views,
private to its session (``opened``).
"""
