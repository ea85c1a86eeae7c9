"""python -m torch_gpt.sample: write text with the kid from kid.npz or kid.pt, with PyTorch on the CPU.

The same flags, sampling rule and random numbers as python -m numpy_gpt.sample: the same checkpoint,
prompt, seed and --dtype print the same text (numpy_gpt.sampling says how surely, for each --dtype).
"""
import numpy as np
import torch

from numpy_gpt.machinery.checkpoint import load_params
from numpy_gpt.machinery.cli import check_sampling_args, run_cli, sampling_parser, stream_samples
from numpy_gpt.data import CharTokenizer

from .model import GPT


def load_model(path, dtype=torch.float32):
    """A GPT in dtype on the CPU, from a .npz weights file or a kid.pt training state -> (model, chars)."""
    params, config, chars = load_params(path)
    model = GPT(config, dtype=dtype)
    model.load_numpy(params)                # cast to dtype as it is copied in
    return model.eval(), chars


def configure_threads():
    """Generation at batch 1 is a chain of tiny operations: one thread runs them fastest, and leaves the
    other cores to whatever else is running (a training run, say)."""
    torch.set_num_threads(1)


def parser():
    return sampling_parser("python -m torch_gpt.sample", "Sample text from a trained kid with "
                           "torch_gpt (reads kid.npz, or the training state kid.pt).")


def main(argv=None):
    args = check_sampling_args(parser().parse_args(argv))
    configure_threads()
    model, chars = load_model(args.checkpoint, getattr(torch, args.dtype))

    def sampler(n):
        """(prefill, decode) for n samples at once, over a fresh KV cache"""
        kv = model.new_kv_cache(n)
        return (lambda window: model.prefill(torch.from_numpy(window), kv).numpy(),
                lambda tokens, pos: model.decode(torch.from_numpy(tokens), pos, kv).numpy())

    stream_samples(args, sampler, CharTokenizer(chars), model.config.block_size, np.random.default_rng(args.seed))
    return 0


if __name__ == "__main__":
    run_cli(main)
