"""Inspect models: activations of named layers (statistics, top-k inputs)."""

from nettle.inspect.activations import LayerStats, TopK, activation_stats, capture, top_k

__all__ = ["LayerStats", "TopK", "activation_stats", "capture", "top_k"]
