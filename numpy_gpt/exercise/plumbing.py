"""What the exercise borrows from numpy_gpt's command-line plumbing, imported here and nowhere else in
this package: the error a user can fix, the command runner and parser, safe file writes, the training
defaults, the progress line, and the text."""
from ..machinery.checkpoint import atomic_write
from ..machinery.cli import ArgumentParser, HelpFormatter, check_output, check_training_args, run_cli, training_parser
from ..machinery.errors import UserError, open_input
from ..data import CharTokenizer, split_train_val
from ..machinery.corpus import default_prompt, load_text
from ..machinery.loop import Progress

__all__ = ["ArgumentParser", "CharTokenizer", "HelpFormatter", "Progress", "UserError", "atomic_write",
           "check_output", "check_training_args", "default_prompt", "kid_training_settings", "load_text",
           "open_input", "run_cli", "split_train_val"]


def kid_training_settings():
    """The kid's training settings, as `python -m numpy_gpt.train` takes them with no flags: lr, min_lr,
    warmup_steps, weight_decay, beta1, beta2, grad_clip, dropout, batch_size, seed, and the model's shape."""
    return check_training_args(training_parser("numpy_gpt.exercise", "").parse_args([]))
