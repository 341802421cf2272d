"""How a model is served, measured: the KV cache on and off, token by token, with the bytes it holds
against the formula (``kv_cache``). Other inference experiments (quantization, speculative decoding) land
here beside it.
"""
