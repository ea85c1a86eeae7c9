"""torch_gpt: the same GPT as numpy_gpt, in PyTorch, for real training runs and fast sampling."""
from .model import GPT

__all__ = ["GPT"]
