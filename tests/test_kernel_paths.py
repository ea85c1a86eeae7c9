"""The numerics-sensitive tests again, on other CPU kernel paths than this CPU's own.

PyTorch picks its CPU kernels when it starts, by what the CPU has: another user's CPU runs other kernels,
which round otherwise. ATEN_CPU_CAPABILITY and oneDNN's ONEDNN_MAX_CPU_ISA force the older paths here,
so each bar (tests/bounds.py, parity.compare) is tried on kernels this CPU would not pick. Each path
runs benchmarks.margins.KERNEL_TESTS in a subprocess; a path this CPU cannot take is skipped, saying
why. `python -m benchmarks.margins` prints how close each test comes to its bar on each path.
"""
import os
import re
import subprocess
import sys

import pytest

from benchmarks.margins import KERNEL_TESTS, PATHS, run_tests

# Collected from KERNEL_TESTS: 1 DDP, 3 + 2 parity, 2 + 4 sampling, 1 bf16 step, 1 resume in the other backend
EXPECTED_PASSED = 14


def aten_capability(env_vars):
    """-> the capability torch reports when started with env_vars: "AVX2", "DEFAULT", "AVX512"..."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env_vars}, capture_output=True,
                          text=True).stdout.strip()


def onednn_isa(env_vars):
    """-> the instruction set oneDNN names (ONEDNN_VERBOSE) for one float32 matmul under env_vars, or ''."""
    code = ("import torch; torch.ops.mkldnn._linear_pointwise(torch.ones(64, 8), torch.ones(8, 8), None, "
            "'none', [], '')")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env_vars, "ONEDNN_VERBOSE": "1"},
                            capture_output=True, text=True)
    found = re.search(r"isa:([^,\n]*)", result.stdout + result.stderr)
    return found[1] if found else ""


@pytest.mark.parametrize("path", ["aten=avx2", "aten=default", "onednn=AVX2"])
def test_the_numerics_hold_on_another_kernel_path(path, tmp_path):
    env_vars = PATHS[path]
    if "ATEN_CPU_CAPABILITY" in env_vars:
        got = aten_capability(env_vars)
        if got != env_vars["ATEN_CPU_CAPABILITY"].upper():
            pytest.skip(f"this CPU has no ATen {env_vars['ATEN_CPU_CAPABILITY']} path (torch reports {got or 'nothing'})")
    else:
        isa = onednn_isa(env_vars)
        if not isa:
            pytest.skip("this torch has no oneDNN matmul on this CPU, so ONEDNN_MAX_CPU_ISA picks nothing")
        if env_vars["ONEDNN_MAX_CPU_ISA"].replace("_", "").lower() not in isa.replace("-", "").replace(" ", "").lower():
            pytest.skip(f"this CPU has no oneDNN {env_vars['ONEDNN_MAX_CPU_ISA']} path (oneDNN reports {isa})")
    result = run_tests(env_vars, tmp_path / "margins.jsonl")
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    assert result.returncode == 0, f"under {env_vars}: {summary}\n{result.stdout[-4000:]}"
    assert f"{EXPECTED_PASSED} passed" in summary and "skipped" not in summary, summary
    assert len(KERNEL_TESTS) == 9


def test_margins_command_says_what_is_wrong():
    """python -m benchmarks.margins: --help, and an unknown path refused in one line before anything runs."""
    from test_numpy_cli import run
    assert run("-m", "benchmarks.margins", "--help").returncode == 0
    result = run("-m", "benchmarks.margins", "--paths", "default,aten=sse9")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == ("error: --paths: unknown kernel path 'aten=sse9'; choose from "
                                     + ", ".join(PATHS))
