"""numpy_gpt: a character-level GPT in pure NumPy, with every gradient written by hand.

Read it in this order: config.py, data.py (the tokenizer and the batches), layers.py (each layer's
forward and backward), model.py, optim.py (AdamW), step.py (one training step), sampling.py. That is
the whole model and its training. What makes it a tool (the loop, the command lines, checkpoints,
progress, signals) lives apart, in numpy_gpt/machinery/. It never imports torch.
"""
from .config import GPTConfig
from .data import CharTokenizer
from .machinery.errors import UserError
from .model import gpt_backward, gpt_forward, init_params, num_params, param_shapes

__all__ = ["GPTConfig", "UserError", "CharTokenizer", "gpt_forward", "gpt_backward", "init_params",
           "num_params", "param_shapes"]
