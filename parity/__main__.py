"""python -m parity: load one set of weights into numpy_gpt and torch_gpt and compare them tensor by tensor.

Prints one table row per tensor (every activation, every parameter gradient from both torch attention
paths, the update of one AdamW step, then a float64 training trajectory; torch_gpt steps with
torch_gpt.train's own optimizer and step), then a verdict.
Exits 1 on any mismatch.
"""
import argparse
import time

from numpy_gpt.machinery.cli import SEED_MAX, ArgumentParser, check_output, check_seed, run_cli
from numpy_gpt.machinery.errors import UserError

from .compare import format_report, run_parity


def parser():
    p = ArgumentParser(prog="python -m parity", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a weights file (.npz), e.g. out/kid.npz; default: a seeded GPT-2 init of the kid")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="for the activations, gradients and the one-step check (the trajectory is float64)")
    p.add_argument("--steps", type=int, default=50, help="length of the float64 training trajectory; 0 skips it")
    p.add_argument("--seed", type=int, default=0,
                   help=f"seeds the init (without --checkpoint) and the batches (0..{SEED_MAX})")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the summary (the worst tensor of each section) as JSON, e.g. for peek build")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.steps < 0:
        raise UserError(f"--steps must be 0 or more, got {args.steps}")
    check_seed(args.seed)
    if args.json:
        check_output(args.json, "--json", folder=False)
    start = time.perf_counter()
    report = run_parity(args.checkpoint, args.dtype, args.steps, args.seed)
    source = args.checkpoint or f"a GPT-2 init of the kid, seed {args.seed}"
    print(format_report(report, args.dtype, f"# parity: numpy_gpt vs torch_gpt, {args.dtype}, weights from {source}"))
    rows = report.rows()
    worst = max(rows, key=lambda r: r.margin)
    if args.json:
        write_summary(args.json, report, args.dtype, source)
    failed = [r.name for r in rows if not r.ok]
    if failed:
        print(f"\nFAIL: {len(failed)} of {len(rows)} tensors differ beyond tolerance: {', '.join(failed[:10])}"
              f"{' ...' if len(failed) > 10 else ''}")
        return 1
    print(f"\nPASS: all {len(rows)} tensors agree; the closest to its tolerance is {worst.name} at "
          f"{worst.max_rel:.2e} (tolerance {worst.tol:.1e}); {time.perf_counter() - start:.1f} s")
    return 0


def write_summary(path, report, dtype, source):
    """The summary table as JSON: per section its tensor count, worst tensor, max rel and tolerance."""
    import json
    from numpy_gpt.machinery.checkpoint import atomic_write
    sections = []
    for title, rows in report.sections:
        w = max(rows, key=lambda r: r.margin)
        sections.append({"section": title, "tensors": len(rows), "worst": w.name, "max_rel": float(w.max_rel),
                         "tol": float(w.tol), "ok": all(r.ok for r in rows)})
    summary = {"dtype": dtype, "weights": source, "ok": report.ok, "sections": sections}
    atomic_write(path, lambda f: f.write(json.dumps(summary, indent=1).encode()))


if __name__ == "__main__":
    run_cli(main)
