"""python -m benchmarks: measure both backends against this machine's own float32 matmul peak.

Prints a markdown table and writes the same figures as JSON. Every figure is the median of several
timed repeats after a warm-up, with the spread (min to max) beside it:

    peak       a large float32 matmul (2 n^3 FLOP) by each routine: NumPy's, torch's mm, and the oneDNN
               kernel torch_gpt's Linear uses on x86-64; the fastest of them is the machine's peak.
               Where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), torch's bfloat16 mm
               too: the peak of the bf16 row below
    training   one training step of the kid at the default batch, CPU, for torch_gpt and numpy_gpt in
               float32, each in a fresh child process that imports only its backend: ms/step,
               tokens/s, GFLOP/s, fraction of the peak, and the child's own peak resident memory
               (VmHWM, Linux only), with how far the steps took it above what was resident before
               them; where the CPU has bfloat16, torch_gpt under bf16 autocast (its trainer's default
               there), and (not with --quick, where compiling would take most of the time) the same
               step torch.compiled, as --compile trains; and where torch_gpt's Linear runs on oneDNN,
               torch_gpt in float32 again with torch's own mm instead, to show what oneDNN buys
    sampling   500 new characters from a 6-character prompt, at batch 1 with the KV cache and with a
               full recompute for every character, and 32 samples of 500 drawn as one batch with the
               KV cache (--num-samples 32): characters/s, all samples' characters counted

A step's FLOPs are 6 per matmul weight per token plus 12 * L * T * C per token for attention's two
T x T products: the PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT estimate_mfu convention, which
counts the causally masked half of the scores too. GFLOP/s and the fraction of the peak use it; the
header also gives the step counted without the masked half (6 * L * T * C for attention).

--quick runs everything at toy sizes in seconds (CI runs it so the benchmarks never rot; it asserts
nothing about speed).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from numpy_gpt import GPTConfig
from numpy_gpt.machinery.cli import ArgumentParser, check_at_least, check_output, run_cli

from .loops import QUICK, flops_per_step, sampler, time_calls


def summary(times):
    """median and spread of a list of seconds"""
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def matmul_peak(n, repeats, bf16):
    """GFLOP/s of an n x n x n float32 matmul, median of repeats after one warm-up, by each routine the
    backends use: NumPy's BLAS, torch's (MKL on x86), and the oneDNN kernel of torch_gpt's Linear; with
    bf16, torch's bfloat16 mm as well (oneDNN's, on AMX where the CPU has it)."""
    import torch

    import torch_gpt.kernels
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    routines = [("numpy", lambda: a @ b), ("torch mm", lambda: ta @ tb)]
    if torch_gpt.kernels.ONEDNN_LINEAR:
        routines.append(("torch oneDNN", lambda: torch.ops.mkldnn._linear_pointwise(ta, tb, None, "none", [], "")))
    if bf16:
        ha, hb = ta.bfloat16(), tb.bfloat16()
        routines.append(("torch mm bf16", lambda: ha @ hb))
    out = {}
    for name, fn in routines:
        t = summary(time_calls(fn, warmup=1, repeats=repeats))
        out[name] = {"n": n, "seconds": t, "gflops": 2 * n ** 3 / t["median"] / 1e9,
                     "gflops_min": 2 * n ** 3 / t["max"] / 1e9, "gflops_max": 2 * n ** 3 / t["min"] / 1e9}
    return out


def training(backend, quick, repeats):
    """Time one backend's training step in a fresh child process -> dict of figures (memory in MiB,
    None where the child could not measure it)."""
    cmd = [sys.executable, "-m", "benchmarks.loops", "--backend", backend, "--repeats", str(repeats)]
    if quick:
        cmd += ["--quick", "--warmup", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    child = json.loads(result.stdout.strip().splitlines()[-1])
    return {"seconds": summary(child["times"]), **{k: child[k] for k in (
        "peak_mib", "rss_before_loop_mib", "loop_peak_mib", "torch_imported")}}


def sampling(backend, use_cache, config, n_new, batch, repeats):
    t = summary(time_calls(sampler(backend, config, use_cache, n_new, batch), warmup=1, repeats=repeats))
    chars = n_new * batch
    return {"seconds": t, "batch": batch, "chars_per_s": chars / t["median"], "chars_per_s_min": chars / t["max"],
            "chars_per_s_max": chars / t["min"]}


def machine():
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


TRAINING_ROWS = {"torch": "torch_gpt, float32", "torch-bf16": "torch_gpt, bf16 autocast",
                 "torch-bf16-compile": "torch_gpt, bf16 autocast, torch.compile",
                 "torch-mm": "torch_gpt, float32, Linear on torch's mm", "numpy": "numpy_gpt, float32"}
SAMPLE_BATCH = 32


def run(quick, repeats):
    import torch_gpt.kernels
    from torch_gpt.train import cpu_has_bf16
    config = QUICK if quick else GPTConfig()
    batch, bf16 = 32, cpu_has_bf16()
    backends = (["torch"] + ["torch-bf16"] * bf16 + ["torch-bf16-compile"] * (bf16 and not quick) +
                ["torch-mm"] * torch_gpt.kernels.ONEDNN_LINEAR + ["numpy"])     # compiling: too slow for --quick
    r = {"quick": quick, "machine": machine(), "config": config.to_dict(), "batch_size": batch,
         "flops_per_step": flops_per_step(config, batch),
         "flops_per_step_causal": flops_per_step(config, batch, causal_only=True)}
    stages, done, start = 7 + len(backends), 0, time.perf_counter()      # peak, training loops, 6 samplers

    def say(what):
        """One progress line per stage, to stderr, with the time so far and a rough ETA."""
        nonlocal done
        elapsed = time.perf_counter() - start
        eta = f", about {elapsed / done * (stages - done):.0f} s left" if done else ""
        done += 1
        print(f"[{done}/{stages}] {what} ({elapsed:.0f} s so far{eta})", file=sys.stderr, flush=True)
    say("measuring the float32 matmul peak ...")
    r["peak"] = matmul_peak(512 if quick else 4096, 3 if quick else repeats, bf16)
    r["peak_gflops"] = max(v["gflops"] for k, v in r["peak"].items() if "bf16" not in k)
    r["peak_bf16_gflops"] = r["peak"]["torch mm bf16"]["gflops"] if bf16 else None
    r["train"] = {}
    for backend in backends:
        say(f"timing {TRAINING_ROWS[backend]} training steps ...")
        t = training(backend, quick, 3 if quick else repeats)
        med = t["seconds"]["median"]
        peak = r["peak_bf16_gflops"] if backend.startswith("torch-bf16") else r["peak_gflops"]
        t.update(ms_per_step=med * 1e3, tokens_per_s=batch * config.block_size / med,
                 gflops=r["flops_per_step"] / med / 1e9, fraction_of_peak=r["flops_per_step"] / med / 1e9 / peak)
        r["train"][backend] = t
    r["numpy_over_torch"] = r["train"]["numpy"]["ms_per_step"] / r["train"]["torch"]["ms_per_step"]
    n_new = 50 if quick else 500
    r["sample"] = {}
    for backend in ("numpy", "torch"):
        for mode, use_cache, n in (("cache", True, 1), ("recompute", False, 1), ("batch", True, SAMPLE_BATCH)):
            say(f"timing {backend} sampling, {n} at a time, {'KV cache' if use_cache else 'full recompute'} ...")
            r["sample"][f"{backend} {mode}"] = sampling(backend, use_cache, config, n_new, n, 2 if quick else 5)
    r["sample_chars"] = n_new
    return r


def memory(t):
    """'577 MiB (140 in the loop)': the child's peak, and the steps' peak above what was resident before them."""
    if t["peak_mib"] is None:
        return "n/a"
    loop = "n/a" if t["loop_peak_mib"] is None else f"{t['loop_peak_mib'] - t['rss_before_loop_mib']:.0f}"
    return f"{t['peak_mib']:.0f} MiB ({loop} in the loop)"


def table(r):
    m, full, causal = r["machine"], r["flops_per_step"], r["flops_per_step_causal"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']}, torch {m['torch']} "
             f"({m['torch_threads']} threads){'; --quick (toy sizes)' if r['quick'] else ''}.",
             f"Model {r['config']}, batch {r['batch_size']}; one step = {full / 1e9:.1f} GFLOP "
             f"(6 x matmul params x tokens + 12 x L x T x C x tokens, the PaLM/nanoGPT count, which includes "
             f"attention's causally masked half; counting the causal half alone, 6 x L x T x C x tokens, a step is "
             f"{causal / 1e9:.1f} GFLOP and every training GFLOP/s below {1 - causal / full:.0%} lower). "
             f"\"Of peak\" is of the float32 peak, and for the bf16 rows of the bfloat16 peak.", "",
             "| measurement | median | spread (min to max) | GFLOP/s | of peak | peak memory |",
             "|---|---|---|---|---|---|"]
    for name, p in r["peak"].items():
        s, bf16 = p["seconds"], "bf16" in name
        lines.append(f"| {'bfloat16' if bf16 else 'float32'} matmul peak, {name.replace(' bf16', '')} "
                     f"({p['n']}^3) | {s['median'] * 1e3:.1f} ms | {s['min'] * 1e3:.1f} to {s['max'] * 1e3:.1f} ms | "
                     f"{p['gflops']:.0f} | {'(the bf16 peak)' if bf16 else format(p['gflops'] / r['peak_gflops'], '.0%')} | |")
    for name, t in r["train"].items():
        s = t["seconds"]
        lines.append(f"| training step, {TRAINING_ROWS[name]} | {t['ms_per_step']:.1f} ms ({t['tokens_per_s'] / 1e3:.1f}k tok/s) | "
                     f"{s['min'] * 1e3:.1f} to {s['max'] * 1e3:.1f} ms | {t['gflops']:.0f} | "
                     f"{t['fraction_of_peak']:.0%} | {memory(t)} |")
    lines.append(f"| numpy_gpt step / torch_gpt float32 step | {r['numpy_over_torch']:.2f} x | | | | |")
    for name, t in r["sample"].items():
        backend, mode = name.split()
        what = {"cache": "batch 1, KV cache", "recompute": "batch 1, full recompute",
                "batch": f"{t['batch']} samples as one batch, KV cache"}[mode]
        lines.append(f"| sampling {r['sample_chars']} chars, {what}, {backend}_gpt | {t['chars_per_s']:.0f} chars/s | "
                     f"{t['chars_per_s_min']:.0f} to {t['chars_per_s_max']:.0f} chars/s | | | |")
    return "\n".join(lines)


def parser():
    p = ArgumentParser(prog="python -m benchmarks", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes, seconds in all (for CI)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per training figure (with --quick: 3)")
    p.add_argument("--json", default="out/benchmarks.json", help="where to write the figures as JSON")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    check_at_least(args, 1, "--repeats")
    check_output(args.json, "--json", folder=False)
    start = time.perf_counter()
    r = run(args.quick, args.repeats)
    r["wall_s"] = time.perf_counter() - start
    print(table(r))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(r, indent=2))
    print(f"\n(figures also in {args.json}; {r['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
