"""parity: proof that numpy_gpt and torch_gpt compute the same activations, gradients and updates."""
from .compare import TOLERANCE, Shadow, run_parity

__all__ = ["TOLERANCE", "Shadow", "run_parity"]
