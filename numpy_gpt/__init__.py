"""numpy_gpt: a character-level GPT in pure NumPy, with every gradient written by hand.

Read it in this order: config.py, data.py, layers.py (each layer's forward and backward), model.py,
optim.py, then loop.py (the training loop that both trainers run) and train.py (its NumPy step), then
sampling.py and sample.py. It never imports torch.
"""
from .config import GPTConfig, UserError
from .data import CharTokenizer
from .model import gpt_backward, gpt_forward, init_params, num_params, param_shapes

__all__ = ["GPTConfig", "UserError", "CharTokenizer", "gpt_forward", "gpt_backward", "init_params",
           "num_params", "param_shapes"]
