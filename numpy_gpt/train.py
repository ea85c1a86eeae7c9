"""python -m numpy_gpt.train: train the kid with the NumPy reference (the same math as torch_gpt).

The step is numpy_gpt.step's; the loop, its files, --resume and the stop rules are
numpy_gpt.machinery.loop's, shared with torch_gpt.train, and numpy_gpt.machinery.threaded runs the step
on every core. A run it starts continues with python -m torch_gpt.train --resume, and the other way round.
"""
from .machinery.cli import run_cli, training_parser
from .machinery.loop import check_run, train
from .machinery.threaded import NumpyBackend


def parser():
    return training_parser("python -m numpy_gpt.train", "Train the kid with the NumPy reference implementation.")


def main(argv=None):
    args = check_run(parser().parse_args(argv))
    args.micro_batches = args.grad_accum
    return train(args, NumpyBackend(args))


if __name__ == "__main__":
    run_cli(main)
