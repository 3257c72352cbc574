"""tokens_to_canvas: token ids and a learned patch table to the model's input canvas (docs/ops/tokens_to_canvas.md)."""
from .api import tokens_to_canvas

__all__ = ["tokens_to_canvas"]
