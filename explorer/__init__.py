"""LLM Explorer: see inside small language models of the three transformer families."""

import os

# OpenMP's default busy-waiting makes torch 10-30x slower whenever a shared host takes a core
# away; passive waiting costs a few percent when idle. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
