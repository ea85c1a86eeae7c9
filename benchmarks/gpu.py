"""python -m benchmarks.gpu: the kid's training step on a CUDA GPU, as python -m torch_gpt.train runs it there.

    peak      an n x n x n product (2 n^3 FLOP) in bfloat16 and in float32 (TF32 off, as torch leaves
              it): the GPU's own ceilings, measured
    training  one step of the kid at each --batch-size (default: the trainers' 32), as the trainer runs
              it on a GPU, in PyTorch's deterministic mode: in float32, under bf16 autocast (the
              trainer's default on a GPU) and the same torch.compiled (--compile), each launched from
              Python (--cuda-graph off) and as the trainer runs it on one GPU, a CUDA graph a step:
              ms/step, tokens/s, the fraction of the bfloat16 peak (FLOPs counted as python -m
              benchmarks counts them), and the most GPU memory the steps held

A step's time is --steps steps run as one block between two synchronizations, as the trainer runs
them (it reads the loss every 10 steps, and the GPU runs ahead in between); the figure is the median
of --repeats blocks after a warm-up block, which includes torch.compile's compilation and the graph's
capture. Needs a CUDA GPU; elsewhere it says so in one line.
"""
import argparse
import json
import statistics

from numpy_gpt import GPTConfig
from numpy_gpt.machinery.cli import ArgumentParser, check_at_least, check_output, run_cli
from numpy_gpt.machinery.errors import UserError

from .loops import QUICK, flops_per_step, time_calls, torch_train_step

VARIANTS = {"float32": {}, "float32, CUDA graph": {"cuda_graph": True},
            "bf16 autocast": {"bf16": True}, "bf16 autocast, CUDA graph": {"bf16": True, "cuda_graph": True},
            "bf16 autocast, compiled": {"bf16": True, "compile": True},
            "bf16 autocast, compiled, CUDA graph": {"bf16": True, "compile": True, "cuda_graph": True}}


def parser():
    p = ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, nargs="+", default=[32], help="batch sizes to time (default: 32)")
    p.add_argument("--steps", type=int, default=50, help="steps in each timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per figure")
    p.add_argument("--quick", action="store_true", help="toy sizes, a few seconds (it asserts nothing about speed)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return p


def synced(fn):
    """fn, then wait for the GPU to finish what it queued: what time_calls times"""
    import torch
    return lambda: (fn(), torch.cuda.synchronize())


def matmul_peak(n, repeats, dtype):
    """TFLOP/s of an n x n x n product of random matrices on the GPU, the median of repeats"""
    import torch
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    times = time_calls(synced(lambda: a @ b), warmup=1, repeats=repeats)
    return 2 * n ** 3 / statistics.median(times) / 1e12


def training(config, batch_size, steps, repeats, variant):
    """-> figures for one variant of the training step at batch_size"""
    import torch
    torch.cuda.reset_peak_memory_stats()
    step = torch_train_step(config, batch_size, device="cuda", **VARIANTS[variant])

    def block():
        for _ in range(steps):
            step()
    times = [t / steps for t in time_calls(synced(block), warmup=1, repeats=repeats)]
    median = statistics.median(times)
    return {"variant": variant, "batch_size": batch_size, "ms_per_step": median * 1e3,
            "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3,
            "tokens_per_s": batch_size * config.block_size / median,
            "tflops": flops_per_step(config, batch_size) / median / 1e12,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2 ** 20}


def main(argv=None):
    args = parser().parse_args(argv)
    if min(args.batch_size) < 1:
        raise UserError(f"--batch-size must be at least 1, got {min(args.batch_size)}")
    check_at_least(args, 1, "--steps")
    if args.json:
        check_output(args.json, "--json", folder=False)
    check_at_least(args, 1, "--repeats")
    import torch
    if not torch.cuda.is_available():
        raise UserError("python -m benchmarks.gpu needs a CUDA GPU, and torch sees none; python -m benchmarks "
                        "measures the CPU")
    config = QUICK if args.quick else GPTConfig()
    n = 1024 if args.quick else 8192
    peak = {"bf16": matmul_peak(n, args.repeats, torch.bfloat16), "float32": matmul_peak(n, args.repeats, torch.float32)}
    rows = []
    for variant in VARIANTS:
        for batch_size in args.batch_size:
            rows.append(training(config, batch_size, args.steps, args.repeats, variant))
            r = rows[-1]
            print(f"  timed: batch {batch_size}, {variant}: {r['ms_per_step']:.2f} ms/step", flush=True)
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}; {config}\n")
    print(f"| measure | figure |\n|---|---:|\n| bfloat16 product peak ({n}^3) | {peak['bf16']:.0f} TFLOP/s |\n"
          f"| float32 product peak ({n}^3, TF32 off) | {peak['float32']:.1f} TFLOP/s |\n")
    print("| training step | batch | ms/step (min-max) | tokens/s | TFLOP/s | of the bf16 peak | GPU memory |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['batch_size']} | {r['ms_per_step']:.2f} ({r['min_ms']:.2f}-{r['max_ms']:.2f}) | "
              f"{r['tokens_per_s']:,.0f} | {r['tflops']:.2f} | {r['tflops'] / peak['bf16']:.2%} | "
              f"{r['peak_gpu_mib']:.0f} MiB |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "peak_tflops": peak,
                       "train": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    run_cli(main)
