"""python -m numpy_gpt.report, and python -m torch_gpt.report, the same command: a training run's
figures, as markdown, from its log.jsonl.

Either trainer's run: both write the same log (numpy_gpt.machinery.loop). The default runs' pages,
docs/training.md and docs/numpy-reference.md, give this command's output: the losses and the sample (from ROMEO:) at every
evaluation, the final val loss and the wall time.
"""
import argparse
import json
import os
from pathlib import Path

from .cli import ArgumentParser, run_cli
from .errors import UserError, open_input

FIELDS = ("step", "train_loss", "val_loss", "elapsed_s")      # what report() reads from every entry


def load_log(out):
    """The run's log.jsonl -> its entries, each checked for the numbers report() reads."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file; pass the run's folder (the trainer's --out)")
    path = Path(out) / "log.jsonl"
    with open_input(path, "log", f"train first (python -m torch_gpt.train --out {out}), or pass the run's --out") as f:
        data = f.read()
    try:
        log = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not JSON lines ({e}); is it a training log.jsonl?") from None
    if not log:
        raise UserError(f"{path} is empty: the run has not reached its first evaluation yet")
    for n, e in enumerate(log, 1):
        if not isinstance(e, dict) or not all(isinstance(e.get(k), (int, float)) for k in FIELDS):
            raise UserError(f"{path} line {n} lacks a number for one of {', '.join(FIELDS)}; "
                            f"is it a training log.jsonl?")
        if e["elapsed_s"] < 0 or not isinstance(e.get("eval_s", 0), (int, float)) or e.get("eval_s", 0) < 0:
            raise UserError(f"{path} line {n} has a negative or non-numeric time (elapsed_s, eval_s); "
                            f"is it a training log.jsonl?")
        if not isinstance(e.get("sample", ""), str):
            raise UserError(f"{path} line {n} has a sample that is not text; is it a training log.jsonl?")
    return log


def report(log):
    last = log[-1]
    lines = [f"Final (step {last['step']}): train loss {last['train_loss']:.4f}, val loss {last['val_loss']:.4f}, "
             f"{last['elapsed_s'] / 60:.1f} minutes of wall time, evaluations included.", "",
             "| step | train loss | val loss | minutes |", "|---:|---:|---:|---:|"]
    if all("eval_s" in e for e in log) and last["elapsed_s"] > 0:      # logs before eval_s lack it
        spent = sum(e["eval_s"] for e in log)
        lines[1:1] = ["", f"Evaluations (their losses, samples and snapshots): {spent:.0f} s of the "
                          f"{last['elapsed_s']:.0f} s, {spent / last['elapsed_s']:.1%}."]
    lines += [f"| {e['step']} | {e['train_loss']:.4f} | {e['val_loss']:.4f} | {e['elapsed_s'] / 60:.1f} |" for e in log]
    if all("sample" in e for e in log):
        lines += ["", "The same prompt and random numbers at every evaluation:", ""]
        for e in log:
            lines += [f"**step {e['step']}** (val loss {e['val_loss']:.2f})", "", "```", e["sample"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def parser(prog="python -m numpy_gpt.report"):
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out", help="the run's folder (the trainer's --out)")
    return p


def main(argv=None, prog="python -m numpy_gpt.report"):
    args = parser(prog).parse_args(argv)
    print(report(load_log(args.out)), end="")
    return 0


if __name__ == "__main__":
    run_cli(main)
