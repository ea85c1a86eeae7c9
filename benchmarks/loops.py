"""The timed loops, one backend each. Training loops run in a child process of their own
(python -m benchmarks.loops ...), so each one's peak resident memory is its own.

Shape key: B batch, T time, C channels, L layers, V vocab.
"""
import argparse
import json
import resource
import sys
import time

import numpy as np

from numpy_gpt import GPTConfig, gpt_backward, gpt_forward, init_params
from numpy_gpt.cli import check_training_args, keep_freed_memory, training_parser
from numpy_gpt.model import gpt_decode, gpt_prefill, new_kv_cache
from numpy_gpt.optim import adamw_init, adamw_step, clip_grad_norm
from numpy_gpt.sampling import generate

DEFAULTS = check_training_args(training_parser("", "").parse_args([]))   # the trainers' settings
QUICK = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)


def flops_per_step(config, batch_size):
    """6 * (matmul parameters) * tokens + attention's 12 * L * T * C per token (Kaplan et al. 2020,
    arXiv:2001.08361, counting the full T x T scores, masked half included).

    Forward is 2 FLOPs per parameter per token, backward twice that. Matmul parameters: the four
    Linear weights of each block (12 C^2) and the head (C V); embeddings, LayerNorms and biases are
    not matmuls.
    """
    C, L, T = config.n_embd, config.n_layer, config.block_size
    matmul_params = 12 * L * C * C + C * config.vocab_size
    return batch_size * T * (6 * matmul_params + 12 * L * T * C)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)


def random_batch(config, batch_size, rng):
    ids = rng.integers(0, config.vocab_size, (batch_size, config.block_size + 1))
    return ids[:, :-1], ids[:, 1:]


def numpy_train_step(config, batch_size):
    """-> step(): one numpy_gpt training step (forward with dropout, backward, clipping, AdamW), float32."""
    params = init_params(config, seed=0)
    state = adamw_init(params)
    batch = random_batch(config, batch_size, np.random.default_rng(0))

    rng = np.random.default_rng(1)

    def step():
        _, _, _, cache = gpt_forward(params, config, *batch, DEFAULTS.dropout, rng)
        grads, _ = clip_grad_norm(gpt_backward(params, config, cache), DEFAULTS.grad_clip)
        adamw_step(params, grads, state, DEFAULTS.lr, (DEFAULTS.beta1, DEFAULTS.beta2),
                   weight_decay=DEFAULTS.weight_decay)
    return step


def torch_train_step(config, batch_size, compile=False):
    """-> step(): one torch_gpt training step, exactly as the trainer runs it (float32, CPU): the trainer's
    own functions draw the batch and the dropout masks, then forward, backward, clipping and AdamW."""
    import contextlib

    import torch

    from torch_gpt.model import GPT
    from torch_gpt.train import accumulate_gradients, make_optimizer, micro_batches, optimizer_step
    cpu = torch.device("cpu")
    model = GPT(config)
    optimizer = make_optimizer(model, DEFAULTS, cpu)
    train_model = torch.compile(model) if compile else model
    settings = argparse.Namespace(**{**vars(DEFAULTS), "batch_size": batch_size, "grad_accum": 1})
    train_ids = np.random.default_rng(0).integers(0, config.vocab_size, 100_000)
    steps = iter(range(10 ** 9))

    def step():
        batches = micro_batches(train_ids, settings, next(steps), 0, config, cpu, torch.float32)
        accumulate_gradients(train_model, batches, contextlib.nullcontext(), world=1)
        optimizer_step(model, optimizer, DEFAULTS.lr, DEFAULTS.grad_clip)
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


def sampler(backend, config, use_cache, n_new, prompt=(0, 1, 2, 3, 4, 5)):
    """-> run(): sample n_new characters at batch 1 (temperature 0.8, seed 0) from a random init."""
    params = init_params(config, seed=0)
    if backend == "numpy":
        from numpy_gpt.sample import one_blas_thread
        one_blas_thread()           # as python -m numpy_gpt.sample runs; for the rest of this process
        kv = new_kv_cache(params, config, 1)
        prefill = lambda ids: gpt_prefill(params, config, np.array([ids]), kv)[0]              # noqa: E731
        decode = lambda token, pos: gpt_decode(params, config, np.array([token]), pos, kv)[0]  # noqa: E731
    else:
        import torch

        from torch_gpt.model import GPT
        from torch_gpt.sample import configure_threads
        configure_threads()
        model = GPT(config).eval()
        model.load_numpy(params)
        tkv = model.new_kv_cache(1)
        prefill = lambda ids: model.prefill(torch.tensor([ids]), tkv)[0].numpy()              # noqa: E731
        decode = lambda token, pos: model.decode(torch.tensor([token]), pos, tkv)[0].numpy()  # noqa: E731

    def run():
        for _ in generate(prefill, decode, list(prompt), n_new, config.block_size, np.random.default_rng(0),
                          temperature=0.8, use_cache=use_cache):
            pass
    return run


def main(argv=None):
    """Child process: time one backend's training loop, then report its times and peak memory as JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.loops")
    p.add_argument("--backend", choices=["numpy", "torch", "torch-mm", "torch-compile"], required=True,
                   help="torch-mm: torch_gpt with every Linear on torch's own matmul (F.linear), not oneDNN")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    keep_freed_memory()                 # as the trainers do
    config = QUICK if args.quick else GPTConfig()
    if args.backend == "torch-mm":
        import torch_gpt.model
        torch_gpt.model.ONEDNN_LINEAR = False
    if args.backend == "numpy":
        step = numpy_train_step(config, args.batch_size)
    else:
        step = torch_train_step(config, args.batch_size, compile=args.backend == "torch-compile")
    rss_before = peak_rss_mib()
    times = time_calls(step, args.warmup, args.repeats)
    print(json.dumps({"times": times, "rss_before_mib": rss_before, "peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
