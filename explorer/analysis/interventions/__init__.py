"""Interventions: change one part of a model's computation and measure what its answer loses or regains.

``sites`` names where an intervention acts (each layer's residual stream, attention output, single heads,
MLP output, per token stream) and holds the hook context that applies edits only on the calling thread
and always removes them; ``prompt`` says where a family's answer is read; ``ablation`` switches heads,
attention layers or MLPs off (zero or mean) and sweeps every head in batched passes; ``patching`` copies
activations from a clean run into a corrupted one, position by position; ``steering`` adds a direction
to the residual stream and compares the output with and without it.
"""
