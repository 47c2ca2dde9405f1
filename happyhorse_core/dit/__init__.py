"""The sandwich DiT: layers, one transformer block, the whole model."""
from .model import SandwichDiT

__all__ = ["SandwichDiT"]
