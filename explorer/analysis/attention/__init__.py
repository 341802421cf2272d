"""What attention heads do, in numbers (``heads``): per-head statistics, averages over chosen heads and
attention rollout through the layers, computed from a trace's attention arrays (layer, head, query, key).
The heatmaps, grids and token links that show them are in ``explorer.plots.attention``.
"""
