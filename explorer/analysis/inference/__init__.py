"""How a model is served, measured: the KV cache on and off, token by token, with the bytes it holds
against the formula (``kv_cache``); the weights stored at lower precision on a private copy, with their size,
rounding error and effect on predictions and speed (``quantization``, ``quantization_effects``), each browser
session's latest copies kept within a memory budget (``quantized_sessions``); the KV cache under multi-head,
grouped-query and multi-query attention, measured on tiny models (``attention_variants``); and
speculative decoding with drafts that need no network, step by step, with its acceptance rate and speed-up
against plain greedy decoding (``speculative``, ``speculative_speedup``).
"""
