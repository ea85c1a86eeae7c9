"""python -m benchmarks.parts: the pieces of a training step that docs/performance.md cites.

    attention    one layer's causal attention, forward and backward, at the kid's training shape, under
                 CPU bfloat16 autocast: torch's scaled_dot_product_attention (its CPU flash kernel)
                 against torch_gpt.kernels.causal_products, which torch_gpt uses there
    Linear       the MLP's c_fc, forward and backward, at the kid's training shape, in float32: torch's
                 F.linear (MKL's sgemm on x86) against OneDNNLinear (oneDNN's), where this torch has it
    masks        one step's dropout masks, drawn by NumPy (numpy_gpt.model.dropout_masks), as both
                 trainers draw them on a CPU
    numpy step   numpy_gpt's forward and backward of one batch, as one part on one thread with BLAS on
                 every core, and as the trainer runs it, one part a core (NumpyBackend.forward_backward)
    numpy eval   numpy_gpt's val loss over --eval-batches' default of batches (50), one batch after
                 another with BLAS on every core, and as the trainer runs it, a batch a thread
                 (NumpyBackend.evaluate); an evaluation of the default run is this and 20 train batches

Each figure is the median of --repeats timed calls after one warm-up (of 3 for the evaluations, which
take seconds each), in milliseconds. --quick runs at toy sizes (CI runs it so the command never rots;
it asserts nothing about speed).
"""
import argparse
import contextlib
import io
import statistics

import numpy as np

from numpy_gpt import GPTConfig, gpt_backward, gpt_forward
from numpy_gpt.machinery.cli import ArgumentParser, check_at_least, check_training_args, keep_freed_memory, run_cli, \
    training_parser
from numpy_gpt.model import dropout_masks

from .loops import QUICK, time_calls

DEFAULTS = check_training_args(training_parser("", "").parse_args([]))


def median_ms(fn, repeats):
    return statistics.median(time_calls(fn, warmup=1, repeats=repeats)) * 1e3


def attention(config, B, repeats):
    import torch
    import torch.nn.functional as F

    from torch_gpt.kernels import causal_products
    H, T, D = config.n_head, config.block_size, config.n_embd // config.n_head
    q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))

    def step(attend):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = attend(q, k, v)
        y.float().sum().backward()
    return {"scaled_dot_product_attention": median_ms(
                lambda: step(lambda *a: F.scaled_dot_product_attention(*a, is_causal=True)), repeats),
            "causal_products": median_ms(lambda: step(causal_products), repeats)}


def linear(config, B, repeats):
    import torch
    import torch.nn.functional as F

    from torch_gpt import kernels
    x = torch.randn(B, config.block_size, config.n_embd, requires_grad=True)             # (B, T, C)
    w = (0.02 * torch.randn(4 * config.n_embd, config.n_embd)).requires_grad_()         # (4C, C)
    b = torch.zeros(4 * config.n_embd, requires_grad=True)
    g = torch.randn(B, config.block_size, 4 * config.n_embd)
    out = {"F.linear": median_ms(lambda: F.linear(x, w, b).backward(g), repeats)}
    if kernels.ONEDNN_LINEAR:
        out["OneDNNLinear"] = median_ms(lambda: kernels.OneDNNLinear.apply(x, w, b).backward(g), repeats)
    return out


def numpy_backend(config, B, evals=None):
    """numpy_gpt's trainer backend at batch B, its weights from the default --seed, evals its val batches."""
    from numpy_gpt.machinery.loop import Data
    from numpy_gpt.machinery.threaded import NumpyBackend
    settings = argparse.Namespace(**{**vars(DEFAULTS), "batch_size": B, "grad_accum": 1})
    backend = NumpyBackend(settings)
    with contextlib.redirect_stdout(io.StringIO()):     # its line about the model, not this table's
        backend.start(Data(None, config, None, None, {"val": evals}), None)
    return backend


def numpy_step(config, B, repeats):
    """One batch's forward and backward (no dropout): one part, BLAS on every core; then the trainer's parts."""
    backend = numpy_backend(config, B)
    params = backend.params()
    x, y = np.random.default_rng(0).integers(0, config.vocab_size, (2, B, config.block_size))

    def one_part():
        gpt_backward(params, config, gpt_forward(params, config, x, y)[2])
    return {"one part": median_ms(one_part, repeats),
            f"{backend.threads} parts, one a thread": median_ms(lambda: backend.forward_backward(params, config, x, y, None), repeats)}


def numpy_eval(config, B, n_batches, repeats):
    """The val loss over n_batches: one batch after another, BLAS on every core; then the trainer's way."""
    rng = np.random.default_rng(0)
    evals = [tuple(rng.integers(0, config.vocab_size, (2, B, config.block_size))) for _ in range(n_batches)]
    backend = numpy_backend(config, B, evals)
    params = backend.params()

    def in_turn():
        return np.mean([gpt_forward(params, config, x, y)[1] for x, y in evals])
    return {"one batch after another": median_ms(in_turn, repeats),
            f"a batch a thread, on {backend.threads}": median_ms(lambda: backend.evaluate("val"), repeats)}


def run(quick, repeats):
    import torch
    config, B, n_eval = (QUICK, 4, 2) if quick else (GPTConfig(), DEFAULTS.batch_size, DEFAULTS.eval_batches)
    rng = np.random.default_rng(0)
    return {"config": config.to_dict(), "batch_size": B, "torch_threads": torch.get_num_threads(),
            "attention, one layer, bf16 autocast": attention(config, B, repeats),
            "Linear c_fc, one layer, float32": linear(config, B, repeats),
            "dropout masks, one step": {"numpy_gpt.model.dropout_masks": median_ms(
                lambda: dropout_masks(config, B, config.block_size, DEFAULTS.dropout, rng), repeats)},
            "numpy_gpt forward and backward, one batch": numpy_step(config, B, repeats),
            f"numpy_gpt val loss, {n_eval} batches": numpy_eval(config, B, n_eval, min(repeats, 3))}


def table(r):
    lines = [f"Model {r['config']}, batch {r['batch_size']}, torch on {r['torch_threads']} threads; forward and "
             f"backward where both apply; milliseconds, median.", "", "| part | routine | ms |", "|---|---|---:|"]
    for part, routines in r.items():
        if isinstance(routines, dict) and part != "config":
            lines += [f"| {part} | {name} | {ms:.1f} |" if ms >= 1 else f"| {part} | {name} | {ms:.2g} |"
                      for name, ms in routines.items()]
    return "\n".join(lines)


def parser():
    p = ArgumentParser(prog="python -m benchmarks.parts", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes, seconds in all (for CI)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per figure")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    check_at_least(args, 1, "--repeats")
    keep_freed_memory()                 # as the trainers do
    print(table(run(args.quick, args.repeats)))
    return 0


if __name__ == "__main__":
    run_cli(main)
