"""python -m torch_gpt.report: a training run's figures, as markdown, from its log.jsonl.

The README's training section is this command's output for the default run: the losses and the
ROMEO: sample at every evaluation, the final val loss and the wall time.
"""
import argparse
import json
from pathlib import Path

from numpy_gpt.cli import run_cli
from numpy_gpt.config import UserError


def load_log(out):
    path = Path(out) / "log.jsonl"
    if not path.is_file():
        raise UserError(f"no log at {path}; train first (python -m torch_gpt.train --out {out})")
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not JSON lines ({e})") from None


def report(log):
    last = log[-1]
    lines = [f"Final (step {last['step']}): train loss {last['train_loss']:.4f}, val loss {last['val_loss']:.4f}, "
             f"{last['elapsed_s'] / 60:.1f} minutes of wall time, evaluations included.", "",
             "| step | train loss | val loss | minutes |", "|---:|---:|---:|---:|"]
    lines += [f"| {e['step']} | {e['train_loss']:.4f} | {e['val_loss']:.4f} | {e['elapsed_s'] / 60:.1f} |" for e in log]
    if all("sample" in e for e in log):
        lines += ["", "The same prompt and random numbers at every evaluation:", ""]
        for e in log:
            lines += [f"**step {e['step']}** (val loss {e['val_loss']:.2f})", "", "```", e["sample"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m torch_gpt.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out", help="the run's folder (the trainer's --out)")
    args = p.parse_args(argv)
    print(report(load_log(args.out)), end="")
    return 0


if __name__ == "__main__":
    run_cli(main)
