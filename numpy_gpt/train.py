"""python -m numpy_gpt.train: train the kid with the NumPy reference (the same math as torch_gpt).

The loop, its files, --resume and the stop rules are numpy_gpt.loop's, shared with torch_gpt.train;
this file is the NumPy step: forward, backward, clipping and AdamW on plain arrays. A run it starts
continues with python -m torch_gpt.train --resume, and the other way round.

The step uses every core as DDP uses several GPUs: each micro-batch is cut into one part per core,
each part's forward and backward runs in a thread of its own (NumPy lets go of Python's lock inside
its loops and BLAS calls, which then run one thread each), and the parts' gradients are averaged.
NumPy's elementwise loops (LayerNorm, GELU, softmax, dropout) use one core each; this is what puts
them on all of them. The cut changes only the order of float sums, as DDP's does.
"""
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from .cli import run_cli, training_parser
from .data import batch_rng, dropout_seed, get_batch
from .loop import check_run, train
from .model import (dropout_masks, gpt_backward, gpt_decode, gpt_forward, gpt_prefill, init_params, new_kv_cache,
                    num_params)
from .optim import adamw_init, adamw_step, clip_grad_norm


class NumpyBackend:
    """numpy_gpt's parts of the training loop (numpy_gpt.loop says what each one is)."""
    name, master, sync_every = "numpy_gpt", True, 1

    def __init__(self, args):
        self.args = args
        self.dtype = np.dtype(args.dtype)
        self.precision = args.dtype
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.threads = max(1, min(cores, args.batch_size))     # the parts of a micro-batch, one thread each
        self.pool = ThreadPoolExecutor(self.threads)
        self.blas = ThreadpoolController()

    def start(self, data, state):
        self.config, self.train_ids, self.evals = data.config, data.train_ids, data.evals
        if state:
            self.weights = {name: p.copy() for name, p in state["params"].items()}
            self.opt = {"step": state["adam_step"], "m": dict(state["m"]), "v": dict(state["v"])}
        else:
            self.weights = init_params(self.config, seed=self.args.seed, dtype=self.dtype)
            self.opt = adamw_init(self.weights)
        print(f"numpy_gpt: {num_params(self.weights):,} parameters, {self.config}, {self.args.dtype}, "
              f"{self.args.grad_accum} micro-batch(es) of {self.args.batch_size} per step, each in {self.threads} "
              f"part(s) on as many threads")

    def train_step(self, step, lr):
        """Micro-batches 0 .. K-1 of step (as one torch process draws them), the mean of their gradients,
        clipped, then one AdamW step. -> the last micro-batch's loss."""
        a, K = self.args, self.args.grad_accum
        total = None
        for micro in range(K):
            x, y = get_batch(self.train_ids, a.batch_size, self.config.block_size, batch_rng(a.seed, step, micro))
            masks = dropout_masks(self.config, *x.shape, a.dropout, np.random.default_rng(
                dropout_seed(a.seed, step, micro)), self.dtype) if a.dropout else None
            loss, grads = self.forward_backward(x, y, masks)
            total = grads if total is None else {n: total[n] + g for n, g in grads.items()}
        if K > 1:
            total = {n: g / K for n, g in total.items()}
        total, _ = clip_grad_norm(total, a.grad_clip)
        adamw_step(self.weights, total, self.opt, lr, (a.beta1, a.beta2), weight_decay=a.weight_decay)
        return float(loss)

    def forward_backward(self, x, y, masks):
        """x, y (B, T), masks the micro-batch's dropout masks or None -> (loss, gradients) of the
        micro-batch, from its parts, one a thread: each part's mean loss and gradients, weighted by its
        share of the rows."""
        B = x.shape[0]
        parts = np.array_split(np.arange(B), self.threads)         # row indices, one block a thread

        def part(rows):
            rows = slice(rows[0], rows[-1] + 1)
            _, loss, _, cache = gpt_forward(self.weights, self.config, x[rows], y[rows],
                                            masks=None if masks is None else [m[rows] for m in masks])
            return loss, gpt_backward(self.weights, self.config, cache)
        with self.blas.limit(limits=1, user_api="blas"):            # the threads are the parallelism
            results = list(self.pool.map(part, parts))
        share = [len(rows) / B for rows in parts]
        loss = sum(w * l for w, (l, _) in zip(share, results))
        grads = {n: sum(w * g[n] for w, (_, g) in zip(share, results)) for n in self.weights}
        return loss, grads

    def evaluate(self, split):
        """The mean loss over the split's fixed batches, a batch a thread (one BLAS thread each), as the
        step runs its parts: NumPy's elementwise loops then run on every core."""
        with self.blas.limit(limits=1, user_api="blas"):
            losses = list(self.pool.map(lambda xy: gpt_forward(self.weights, self.config, *xy)[1], self.evals[split]))
        return float(np.mean(losses))

    @contextlib.contextmanager
    def sampling(self):
        from .sample import one_blas_thread
        kv = new_kv_cache(self.weights, self.config, batch_size=1)
        with one_blas_thread():
            yield (lambda ids: gpt_prefill(self.weights, self.config, np.array([ids]), kv)[0],
                   lambda token, pos: gpt_decode(self.weights, self.config, np.array([token]), pos, kv)[0])

    def params(self):
        return self.weights

    def optimizer_state(self):
        return {"m": self.opt["m"], "v": self.opt["v"], "adam_step": self.opt["step"]}

    def agree(self, flags):
        return flags


def parser():
    return training_parser("python -m numpy_gpt.train", "Train the kid with the NumPy reference implementation.")


def main(argv=None):
    args = check_run(parser().parse_args(argv))
    args.micro_batches = args.grad_accum
    return train(args, NumpyBackend(args))


if __name__ == "__main__":
    run_cli(main)
