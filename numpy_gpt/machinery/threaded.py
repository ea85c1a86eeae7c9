"""numpy_gpt's trainer backend: numpy_gpt.step's training step, run on every core.

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
from threadpoolctl import ThreadpoolController, threadpool_limits

from ..model import gpt_decode, gpt_forward, gpt_prefill, init_params, new_kv_cache, num_params
from ..optim import adamw_init
from ..step import forward_backward, micro_batches, train_step


def one_blas_thread():
    """-> a context manager that runs BLAS on one thread.

    Generation at batch 1 is a chain of tiny products. OpenBLAS splits even these across every core,
    and its threads then spend more time meeting than working: on a machine where anything else is
    running, 10x more (126 against 1,200 characters/s on 2 busy cores). One thread is fastest.
    """
    return threadpool_limits(limits=1, user_api="blas")


class NumpyBackend:
    """numpy_gpt's parts of the training loop (numpy_gpt.machinery.loop says what each one is)."""
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
        clipped, then one AdamW step (numpy_gpt.step). -> the last micro-batch's loss."""
        a = self.args
        batches = micro_batches(self.train_ids, self.config, step, a.seed, a.batch_size, a.grad_accum, a.dropout,
                                self.dtype)
        loss = train_step(self.weights, self.opt, self.config, batches, lr, (a.beta1, a.beta2), a.weight_decay,
                          a.grad_clip, forward_backward=self.forward_backward)
        return float(loss)

    def forward_backward(self, params, config, x, y, masks):
        """numpy_gpt.step.forward_backward, one part of the batch a thread -> (loss, gradients) of the
        micro-batch: each part's mean loss and gradients, weighted by its share of the rows."""
        B = x.shape[0]
        parts = np.array_split(np.arange(B), self.threads)         # row indices, one block a thread

        def part(rows):
            rows = slice(rows[0], rows[-1] + 1)
            part_masks = None if masks is None else [m[rows] for m in masks]
            return forward_backward(params, config, x[rows], y[rows], part_masks)
        with self.blas.limit(limits=1, user_api="blas"):            # the threads are the parallelism
            results = list(self.pool.map(part, parts))
        share = [len(rows) / B for rows in parts]
        loss = sum(w * l for w, (l, _) in zip(share, results))
        grads = {n: sum(w * g[n] for w, (_, g) in zip(share, results)) for n in params}
        return loss, grads

    def evaluate(self, split):
        """The mean loss over the split's fixed batches, a batch a thread (one BLAS thread each), as the
        step runs its parts: NumPy's elementwise loops then run on every core."""
        with self.blas.limit(limits=1, user_api="blas"):
            losses = list(self.pool.map(lambda xy: gpt_forward(self.weights, self.config, *xy)[1], self.evals[split]))
        return float(np.mean(losses))

    @contextlib.contextmanager
    def sampling(self):
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
