"""Every bound on the work one request may ask for, defined once, each with what it bounds.

Settings (``explorer.core.settings``) are what a server's host chooses; these are the explorer's own
limits, the same on every server: they keep a request within seconds and the page within megabytes.
Several bound "new tokens", each for a different kind of work, so each has its own name.
"""

# ---------------------------------------------------------------- text
MAX_CHARS = 20_000  # characters of a text analysed at once (the text boxes, a share link); longer is refused
MAX_TRAINING_CHARS = 20_000  # characters of LoRA training text: a few pages, so training finishes in a class
MAX_BPE_TRAINING_CHARS = 2_000_000  # characters a BPE tokenizer may be trained on in the tokens view

# ---------------------------------------------------------------- tokens
MAX_TOKENS = 512  # tokens of one instrumented run (longer inputs are cut, and the trace says so)
MAX_RUN_NEW_TOKENS = 64  # tokens an instrumented run may generate, keeping every attention map of each
MAX_NEW_TOKENS = 64  # tokens a whole-sequence decoding view writes (samples, strategies, beams, step by step)
MAX_STREAM_TOKENS = 512  # tokens streamed generation writes (shown as they come, nothing kept per step)
MAX_EXPLAINED_TOKENS = 16  # continuation tokens attribution explains (each a row of gradients of its own)
MAX_TIMED_TOKENS = 256  # tokens the KV-cache experiment generates and times, with and without the cache
