"""How close the numerics-sensitive tests come to their bars on each CPU kernel path.

    python -m benchmarks.margins [--paths default,aten=avx2,...]

PyTorch picks its CPU kernels when it starts, by what the CPU has; ATEN_CPU_CAPABILITY (default, avx2,
avx512) and oneDNN's ONEDNN_MAX_CPU_ISA (AVX2, AVX512_CORE, ...) force older ones. This runs KERNEL_TESTS
(pytest, one process) under each path, with TINY_LLM_MARGINS set so that each test records its worst
margin, measured / bar (tests/bounds.py, record_margin), and prints one table: a test per row, a path
per column. A margin of 1 is the bar; tests/test_kernel_paths.py runs the same tests under the paths.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from numpy_gpt.machinery.cli import ArgumentParser

ROOT = Path(__file__).resolve().parent.parent
# The numerics-sensitive tests, a few seconds each: DDP against one process, parity, the
# sampling agreement and the KV cache, a step under bf16 autocast, a run resumed in the other backend.
KERNEL_TESTS = [
    "tests/test_ddp.py::test_ddp_step_equals_one_big_batch_and_grad_accum",
    "tests/test_parity.py::test_float32_parity_property",
    "tests/test_parity.py::test_float64_parity_property",
    "tests/test_parity.py::test_cli_passes_on_the_kid[float32-0]",
    "tests/test_parity.py::test_trajectory_50_steps_float64",
    "tests/test_sampling.py::test_how_rarely_the_backends_logits_flip_a_draw",
    "tests/test_sampling.py::test_kv_cache_equals_full_recompute_past_block_size",
    "tests/test_device_paths.py::test_a_step_under_bf16_autocast",
    "tests/test_loop.py::test_a_run_that_switches_backends_matches_runs_that_never_did[torch_gpt-numpy_gpt]",
]
# name -> the environment that forces it
PATHS = {"default": {}, "aten=avx2": {"ATEN_CPU_CAPABILITY": "avx2"}, "aten=default": {"ATEN_CPU_CAPABILITY": "default"},
         "onednn=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "aten=avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
         "onednn=AVX512_CORE": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}}


def run_tests(env_vars, margins_file, tests=KERNEL_TESTS):
    """pytest on tests under env_vars, recording margins into margins_file -> the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}     # not a test of the caller's run
    env.update(env_vars, TINY_LLM_MARGINS=str(margins_file), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def read_margins(margins_file):
    """-> {(test, what): worst margin} from a TINY_LLM_MARGINS file."""
    worst = {}
    for line in Path(margins_file).read_text().splitlines():
        e = json.loads(line)
        key = (e["test"], e["what"])
        worst[key] = max(worst.get(key, 0.0), e["margin"])
    return worst


def parser():
    p = ArgumentParser(prog="python -m benchmarks.margins", description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--paths", default="default,aten=avx2,aten=default,onednn=AVX2",
                   help=f"the kernel paths to run, comma-separated, of: {', '.join(PATHS)} (default: %(default)s)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    names = args.paths.split(",")
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        print(f"error: --paths: unknown kernel path {unknown[0]!r}; choose from {', '.join(PATHS)}", file=sys.stderr)
        return 1
    table, status, start = {}, {}, time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names):
            eta = f", about {(time.monotonic() - start) / i * (len(names) - i) / 60:.0f} min left" if i else ""
            print(f"[{i + 1}/{len(names)}] {name} ...{eta}", file=sys.stderr, flush=True)
            out = Path(tmp) / f"{i}.jsonl"
            out.touch()
            result = run_tests(PATHS[name], out)
            status[name] = "passed" if result.returncode == 0 else result.stdout.strip().splitlines()[-1]
            for key, m in read_margins(out).items():
                table.setdefault(key, {})[name] = m
    print("| test | measured | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for (test, what), row in sorted(table.items()):
        print(f"| {test} | {what} | " + " | ".join(f"{row[n]:.2e}" if n in row else "-" for n in names) + " |")
    print("\n" + "; ".join(f"{n}: {s}" for n, s in status.items()))
    return 0 if all(s == "passed" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
