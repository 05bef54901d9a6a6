"""nettle: a PyTorch workbench for cheap and robust deep networks.

Subpackages, one per verb: `measure` (time, cost, memory), `nn` (layers), `models` (zoo),
`compress`, `attack`, `train`, `inspect`, `experiment`, `cli`. Nothing happens at import.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
