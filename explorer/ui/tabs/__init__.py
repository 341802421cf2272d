"""One module per tab; each exposes ``build(ctx, shared)`` and runs alone via ``python -m``."""
