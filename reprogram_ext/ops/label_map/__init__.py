"""label_map and mapped_cross_entropy: batched label-mapping aggregation (docs/ops/label_map.md)."""
from .api import label_map, mapped_cross_entropy

__all__ = ["label_map", "mapped_cross_entropy"]
