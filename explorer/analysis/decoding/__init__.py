"""From logits to text: how decoding settings reshape the next-token distribution (``sampling``: temperature,
top-k, top-p, min-p, repetition penalty, as transformers' processors do), whole sequences decoded the way
``model.generate`` runs them, with the input checks every decoder view shares (``generate``: greedy,
sampling, streaming), beam search recorded as a tree (``beam_search``), generation one chosen token at a
time (``stepwise``), what each layer would predict (``logit_lens``), and the encoder families' fill-in:
BERT's masked tokens and T5's sentinel spans (``fill_mask``). The next-token view's distribution through
every stage lives in ``distribution``, and greedy, samples and beams side by side in ``strategies``.
"""
