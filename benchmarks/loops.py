"""The timed loops, one backend each. Training loops run in a fresh child process of their own
(python -m benchmarks.loops ...), which imports only what its backend needs (numpy_gpt's never
imports torch) and reads its own peak resident memory from /proc/self/status.

Shape key: B batch, T time, C channels, L layers, V vocab.
"""
import argparse
import json
import sys
import time

import numpy as np

from numpy_gpt import GPTConfig, init_params
from numpy_gpt.machinery.cli import (ArgumentParser, check_at_least, check_memory, check_training_args, keep_freed_memory,
                           run_cli, training_parser)
from numpy_gpt.model import gpt_decode, gpt_prefill, new_kv_cache
from numpy_gpt.sampling import generate_batch

DEFAULTS = check_training_args(training_parser("", "").parse_args([]))   # the trainers' settings
QUICK = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)


def flops_per_step(config, batch_size, causal_only=False):
    """FLOPs of one training step: 6 per matmul weight per token, plus 12 * L * T * C per token for
    attention's two T x T products. The second term is the convention of PaLM (Chowdhery et al. 2022,
    arXiv:2204.02311, appendix B) and of nanoGPT's estimate_mfu; it counts the whole T x T score
    matrix, the causally masked half included.

    Weights: a forward is 2 FLOPs per weight per token (a multiply and an add), the backward twice
    that (the gradients of the input and of the weight), so 6. The matmul weights are the four Linear
    weights of each block (12 C^2) and the head (C V); embeddings, LayerNorms and biases are not matmuls.

    Attention: per token and layer, q k^T and att v are 2 * T * C FLOPs each in the forward (all
    heads together, H * D = C), times 3 with the backward: 12 * L * T * C. A causal kernel (torch_gpt's
    scaled_dot_product_attention) skips the masked half above the diagonal; numpy_gpt computes it and
    masks it. causal_only=True counts only the half a causal model needs, 6 * L * T * C (the diagonal
    aside). Kaplan et al. 2020 (arXiv:2001.08361, table 1) count 2 * L * T * C per token for the
    forward, the same 6 * L * T * C with the backward.
    """
    C, L, T = config.n_embd, config.n_layer, config.block_size
    matmul_params = 12 * L * C * C + C * config.vocab_size
    attention = (6 if causal_only else 12) * L * T * C
    return batch_size * T * (6 * matmul_params + attention)


def proc_status_mib(path="/proc/self/status"):
    """-> {"VmHWM": peak resident MiB, "VmRSS": resident MiB} of this process, from Linux's /proc;
    None where there is none (not Linux).

    VmHWM belongs to this process's own address space, which exec starts afresh. getrusage's
    ru_maxrss does not: a child that subprocess starts (vfork or fork, then exec) carries its parent's
    peak, so under a parent holding 1 GiB it reports 1 GiB however little it uses itself.
    """
    try:
        with open(path) as f:
            fields = dict(line.split(":", 1) for line in f)
    except OSError:
        return None
    if "VmHWM" not in fields or "VmRSS" not in fields:
        return None
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS")}      # "  12345 kB"


def reset_peak(path="/proc/self/clear_refs"):
    """Set this process's VmHWM back to its resident size now (Linux 4.0+) -> whether that worked."""
    try:
        with open(path, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def numpy_train_step(config, batch_size):
    """-> step(): one numpy_gpt training step, exactly as the trainer runs it (float32): its backend draws
    the batch and the dropout masks, then forward and backward in one thread per core, clipping, AdamW."""
    from numpy_gpt.machinery.loop import Data
    from numpy_gpt.machinery.threaded import NumpyBackend
    settings = argparse.Namespace(**{**vars(DEFAULTS), "batch_size": batch_size, "grad_accum": 1})
    backend = NumpyBackend(settings)
    train_ids = np.random.default_rng(0).integers(0, config.vocab_size, 100_000)
    backend.start(Data(None, config, train_ids, None, {}), None)
    steps = iter(range(10 ** 9))
    return lambda: backend.train_step(next(steps), DEFAULTS.lr)


def torch_train_step(config, batch_size, compile=False, bf16=False, device="cpu", cuda_graph=False, lr=DEFAULTS.lr):
    """-> step(): one torch_gpt training step, exactly as the trainer runs it (float32, or under bf16
    autocast, on the CPU or a GPU, launched from Python or, on a GPU, as a CUDA graph): the trainer's
    own functions draw the batch and the dropout masks, then forward, backward, clipping and AdamW at a
    constant lr. -> the loss; on a GPU, step() returns before the GPU is done."""
    import torch

    from torch_gpt.model import GPT
    from torch_gpt.train import (GraphedStep, accumulate_gradients, autocast, make_optimizer, micro_batches,
                                 optimizer_step, repeatable_runs, wrap_model)
    device = torch.device(device)
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, DEFAULTS, device)
    repeatable_runs(device, compile)        # as the trainer does: for the rest of this process
    train_model = wrap_model(model, compile, 1, device)
    settings = argparse.Namespace(**{**vars(DEFAULTS), "batch_size": batch_size, "grad_accum": 1})
    train_ids = np.random.default_rng(0).integers(0, config.vocab_size, 100_000)
    steps = iter(range(10 ** 9))
    cast = autocast(device, bf16)
    graphed = GraphedStep(train_model, model, optimizer, cast, DEFAULTS.grad_clip, device) if cuda_graph else None

    def step():
        batches = micro_batches(train_ids, settings, next(steps), 0, config, device, torch.float32)
        if graphed:
            return graphed(batches, lr)
        loss = accumulate_gradients(train_model, batches, cast, world=1)
        optimizer_step(model, optimizer, lr, DEFAULTS.grad_clip)
        return loss.detach()
    step.model = model                      # for a test that reads the weights it trains
    return step


def time_calls(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def sampler(backend, config, use_cache, n_new, batch=1, prompt=(0, 1, 2, 3, 4, 5)):
    """-> run(): sample n_new characters for each of batch samples drawn as one batch (temperature 0.8,
    seed 0) from a random init, as python -m numpy_gpt.sample and torch_gpt.sample do."""
    params = init_params(config, seed=0)
    if backend == "numpy":
        from numpy_gpt.machinery.threaded import one_blas_thread
        one_blas_thread()           # as python -m numpy_gpt.sample runs; for the rest of this process
        kv = new_kv_cache(params, config, batch)
        prefill = lambda window: gpt_prefill(params, config, window, kv)                      # noqa: E731
        decode = lambda tokens, pos: gpt_decode(params, config, tokens, pos, kv)             # noqa: E731
    else:
        import torch

        from torch_gpt.model import GPT
        from torch_gpt.sample import configure_threads
        configure_threads()
        model = GPT(config).eval()
        model.load_numpy(params)
        tkv = model.new_kv_cache(batch)
        prefill = lambda window: model.prefill(torch.from_numpy(window), tkv).numpy()          # noqa: E731
        decode = lambda tokens, pos: model.decode(torch.from_numpy(tokens), pos, tkv).numpy()  # noqa: E731

    def run():
        for _ in generate_batch(prefill, decode, list(prompt), batch, n_new, config.block_size,
                                np.random.default_rng(0), temperature=0.8, use_cache=use_cache):
            pass
    return run


BACKENDS = {
    "numpy": "numpy_gpt in float32",
    "torch": "torch_gpt in float32",
    "torch-bf16": "under bfloat16 autocast, as its trainer runs where the CPU has AVX512-BF16 or AMX",
    "torch-bf16-compile": "the same, torch.compiled (--compile); the warm-up steps include the compilation",
    "torch-mm": "float32 with every Linear on torch's own matmul (F.linear), not oneDNN",
    "torch-compile": "float32, torch.compiled"}


def parser():
    p = ArgumentParser(prog="python -m benchmarks.loops", description="Time one backend's training step (python -m "
                       "benchmarks runs this in a child process) and print the figures as one line of JSON.")
    p.add_argument("--backend", choices=list(BACKENDS), required=True,
                   help="; ".join(f"{name}: {what}" for name, what in BACKENDS.items()))
    p.add_argument("--quick", action="store_true", help="a toy model, seconds in all (for CI)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="sequences per step")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (torch.compile builds its kernels there)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps")
    return p


def main(argv=None):
    """Child process: time one backend's training loop, then report as JSON its times, its own peak
    memory, and whether torch was imported."""
    args = parser().parse_args(argv)
    check_at_least(args, 1, "--batch-size")
    check_at_least(args, 0, "--warmup")
    check_at_least(args, 1, "--repeats")
    config = QUICK if args.quick else GPTConfig()
    check_memory(config.n_layer, config.n_embd, config.block_size, args.batch_size, 1, 4, "lower --batch-size")
    keep_freed_memory()                 # as the trainers do
    if args.backend == "torch-mm":
        import torch_gpt.kernels
        torch_gpt.kernels.ONEDNN_LINEAR = False
    if args.backend == "numpy":
        step = numpy_train_step(config, args.batch_size)
    else:
        step = torch_train_step(config, args.batch_size, compile=args.backend.endswith("compile"),
                                bf16=args.backend.startswith("torch-bf16"))
    before = proc_status_mib()          # after the model, optimizer and batch exist
    reset = before is not None and reset_peak()
    times = time_calls(step, args.warmup, args.repeats)
    after = proc_status_mib()
    print(json.dumps({
        "times": times,
        "torch_imported": "torch" in sys.modules,
        # this process's peak resident memory over its whole life, or None off Linux
        "peak_mib": after and max(before["VmHWM"], after["VmHWM"]),
        # resident memory before the warm-up and timed steps, and the peak during them
        "rss_before_loop_mib": before and before["VmRSS"],
        "loop_peak_mib": after["VmHWM"] if reset else None}))


if __name__ == "__main__":
    run_cli(main)
