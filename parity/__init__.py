"""parity: proof that numpy_gpt and torch_gpt compute the same activations, gradients and updates."""
from .compare import TOLERANCE, TRAJECTORY_TOLERANCE, run_parity

__all__ = ["TOLERANCE", "TRAJECTORY_TOLERANCE", "run_parity"]
