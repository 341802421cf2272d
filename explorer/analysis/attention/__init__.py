"""What attention heads do, in numbers (``heads``): per-head statistics, averages over chosen heads and
attention rollout through the layers, computed from a trace's attention arrays (layer, head, query, key).
The data behind each view of the Attention tab, cut from one trace with its kind, layer and head clamped
to the model (``views``). The heatmaps, grids and token links that show them are in ``explorer.plots.attention``.
"""
