"""LoRA fine-tuning on a session-owned copy of a shared model: the adapter's settings, targets and training
loop (``finetune``), the training text and its held-out part (``data``), an adapter saved to and loaded from
one safetensors file (``files``), who holds which fine-tune within one memory budget (``sessions``), and
what a fine-tune changed next to the base model and to full fine-tuning (``compare``).
"""
