"""Torch + transformers only: model specs, loading, the instrumented run (Trace), pools and caches."""
