"""One DDP training step on CPU ranks (gloo), started by tests/test_ddp.py through torchrun.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py TEXT OUT.npz
    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py --trainer FLAGS...

Every rank builds the same model, takes its own micro-batch of step 0, and runs the trainer's own
accumulate_gradients and optimizer_step; rank 0 saves the averaged gradients and updated parameters.
With --trainer, every rank runs the trainer's command (python -m torch_gpt.train FLAGS) instead.
Either way each rank ends by printing how many gloo threads it has left: none, once the process group
is really destroyed.
"""
import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from numpy_gpt.machinery.cli import check_training_args, run_cli
from numpy_gpt.machinery.loop import prepare_data
from numpy_gpt.optim import lr_at
from torch_gpt.model import GPT
from torch_gpt.train import (accumulate_gradients, init_distributed, leave_distributed, make_optimizer,
                             micro_batches, optimizer_step, parser)
from torch_gpt.train import main as train_main

CPU = torch.device("cpu")


def setup(text, batch_size=4, grad_accum=1):
    """The settings, config and training ids that the workers and the single-process runs share.

    No dropout: one batch of 2b cannot have the masks of two batches of b. (The trainer test in
    test_ddp.py compares 2 ranks with --grad-accum 2 with dropout on: their masks are the same.)
    """
    args = check_training_args(parser().parse_args(
        ["--data", str(text), "--batch-size", str(batch_size), "--grad-accum", str(grad_accum), "--seed", "3",
         "--dropout", "0",
         "--n-layer", "2", "--n-head", "4", "--n-embd", "32", "--block-size", "32", "--eval-batches", "1",
         "--eval-train-batches", "1"]))
    _, config, train_ids, _, _ = prepare_data(args)
    return args, config, train_ids


def one_step(model, train_model, args, batches, world):
    """Gradients and updated parameters of one trainer step -> (grads, params) as NumPy dicts."""
    optimizer = make_optimizer(model, args, CPU)
    accumulate_gradients(train_model, batches, contextlib.nullcontext(), world)
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    optimizer_step(model, optimizer, lr_at(0, args.lr, args.min_lr, args.warmup_steps, args.steps), args.grad_clip)
    return grads, model.numpy_params()


def main(text, out):
    rank, world, _ = init_distributed("cpu")         # the trainer's own start and end of a process group
    args, config, train_ids = setup(text)
    model = GPT(config, seed=args.seed)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    batches = micro_batches(train_ids, args, 0, rank, config, CPU, torch.float32)
    grads, params = one_step(model, ddp, args, batches, world)
    if rank == 0:
        np.savez(out, **{"grad " + n: g for n, g in grads.items()}, **{"param " + n: p for n, p in params.items()})
    del ddp                 # its reducer holds the process group
    dist.barrier()
    leave_distributed()


def gloo_threads():
    """The threads of this process that gloo started (Linux names them in /proc): its I/O loop and the
    process group's workers. They end only when the process group is destroyed."""
    names = [(Path("/proc/self/task") / t / "comm").read_text().strip() for t in os.listdir("/proc/self/task")]
    return [n for n in names if "gloo" in n]


if __name__ == "__main__":
    try:
        if sys.argv[1] == "--trainer":
            run_cli(lambda: train_main(sys.argv[2:]))      # exits as the command does, through SystemExit
        else:
            main(*sys.argv[1:])
    finally:
        # one write, line and newline together: the ranks share stdout, and print's separate write of
        # the newline let the other rank's line land between them
        sys.stdout.write(f"rank {os.environ['RANK']}: gloo threads left: {len(gloo_threads())}\n")
        sys.stdout.flush()
