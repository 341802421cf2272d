"""Pure computations over traces and models (no gradio, no figures), one subpackage per topic, mirroring the tabs.

``tokens`` (token table, counts, BPE replay, the bundled texts), ``embeddings`` (embedding space and its
projections), ``attention`` (what heads do, in numbers), ``decoding`` (next-token distribution, sampling,
whole sequences, beam search, step by step, logit lens, fill-mask), ``inference`` (the KV cache measured),
``lora`` (fine-tuning, its data, files, sessions and comparisons) and ``attribution`` (which input tokens
drove a prediction). Functions return plain data (dataclasses, numpy arrays, lists); ``explorer.plots``
draws them.
"""
