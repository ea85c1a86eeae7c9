"""python -m numpy_gpt.train: train the kid with the NumPy reference (the same math as torch_gpt).

The loop, its files, --resume and the stop rules are numpy_gpt.loop's, shared with torch_gpt.train;
this file is the NumPy step: forward, backward, clipping and AdamW on plain arrays. A run it starts
continues with python -m torch_gpt.train --resume, and the other way round.
"""
import contextlib

import numpy as np

from .cli import run_cli, training_parser
from .data import batch_rng, dropout_seed, get_batch
from .loop import check_run, train
from .model import gpt_backward, gpt_decode, gpt_forward, gpt_prefill, init_params, new_kv_cache, num_params
from .optim import adamw_init, adamw_step, clip_grad_norm


class NumpyBackend:
    """numpy_gpt's parts of the training loop (numpy_gpt.loop says what each one is)."""
    name, master, sync_every, threads = "numpy_gpt", True, 1, None

    def __init__(self, args):
        self.args = args
        self.dtype = np.dtype(args.dtype)

    def start(self, data, state):
        self.config, self.train_ids, self.evals = data.config, data.train_ids, data.evals
        if state:
            self.weights = {name: p.copy() for name, p in state["params"].items()}
            self.opt = {"step": state["adam_step"], "m": dict(state["m"]), "v": dict(state["v"])}
        else:
            self.weights = init_params(self.config, seed=self.args.seed, dtype=self.dtype)
            self.opt = adamw_init(self.weights)
        print(f"numpy_gpt: {num_params(self.weights):,} parameters, {self.config}, {self.args.dtype}, "
              f"{self.args.grad_accum} micro-batch(es) of {self.args.batch_size} per step")

    def train_step(self, step, lr):
        """Micro-batches 0 .. K-1 of step (as one torch process draws them), the mean of their gradients,
        clipped, then one AdamW step. -> the last micro-batch's loss."""
        a, K = self.args, self.args.grad_accum
        total = None
        for micro in range(K):
            x, y = get_batch(self.train_ids, a.batch_size, self.config.block_size, batch_rng(a.seed, step, micro))
            _, loss, _, cache = gpt_forward(self.weights, self.config, x, y, a.dropout,
                                            np.random.default_rng(dropout_seed(a.seed, step, micro)))
            grads = gpt_backward(self.weights, self.config, cache)
            total = grads if total is None else {n: total[n] + g for n, g in grads.items()}
        if K > 1:
            total = {n: g / K for n, g in total.items()}
        total, _ = clip_grad_norm(total, a.grad_clip)
        adamw_step(self.weights, total, self.opt, lr, (a.beta1, a.beta2), weight_decay=a.weight_decay)
        return float(loss)

    def evaluate(self, split):
        return float(np.mean([gpt_forward(self.weights, self.config, x, y)[1] for x, y in self.evals[split]]))

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
