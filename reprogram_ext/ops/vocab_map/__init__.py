"""vocab_map: windowed vocabulary mapping -> softmax / Gumbel-softmax / none -> @ embedding (docs/ops/vocab_map.md)."""
from .api import vocab_map

__all__ = ["vocab_map"]
