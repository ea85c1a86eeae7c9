"""python -m benchmarks --quick: every benchmark runs at toy sizes (speed is not asserted here)."""
import copy
import json

import numpy as np
import pytest

import torch_gpt.kernels
from torch_gpt.train import cpu_has_bf16

from test_numpy_cli import run


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """-> (the finished command, its JSON figures) of one python -m benchmarks --quick."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    result = run("-m", "benchmarks", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text())


def test_quick_benchmarks_run_and_report_every_figure(quick):
    result, r = quick
    rows = ["float32 matmul peak, numpy", "float32 matmul peak, torch mm", "training step, torch_gpt, float32 |",
            "training step, numpy_gpt, float32", "numpy_gpt step / torch_gpt float32 step",
            "batch 1, KV cache, numpy_gpt", "batch 1, full recompute, numpy_gpt", "batch 1, KV cache, torch_gpt",
            "batch 1, full recompute, torch_gpt", "32 samples as one batch, KV cache, numpy_gpt",
            "32 samples as one batch, KV cache, torch_gpt"]
    if torch_gpt.kernels.ONEDNN_LINEAR:
        rows += ["float32 matmul peak, torch oneDNN", "training step, torch_gpt, float32, Linear on torch's mm"]
    if cpu_has_bf16():
        rows += ["bfloat16 matmul peak, torch mm", "training step, torch_gpt, bf16 autocast"]
    for row in rows:
        assert row in result.stdout, row
    assert "the PaLM/nanoGPT count" in result.stdout and "Kaplan" not in result.stdout
    assert r["quick"] and r["peak_gflops"] > 0 and r["flops_per_step"] > r["flops_per_step_causal"] > 0
    assert r["peak_gflops"] == max(p["gflops"] for name, p in r["peak"].items() if "bf16" not in name)
    assert (r["peak_bf16_gflops"] is not None) is cpu_has_bf16()
    for backend in ["torch"] + ["torch-bf16"] * cpu_has_bf16() + ["torch-mm"] * torch_gpt.kernels.ONEDNN_LINEAR + ["numpy"]:
        t = r["train"][backend]
        assert t["seconds"]["n"] >= 3 and t["seconds"]["min"] <= t["seconds"]["median"] <= t["seconds"]["max"]
        assert 0 < t["fraction_of_peak"]
        # on Linux every memory figure is there (off it, all are None and the table says n/a)
        if t["peak_mib"] is not None:
            assert 0 < t["rss_before_loop_mib"] <= t["loop_peak_mib"] <= t["peak_mib"]
            assert f"{t['peak_mib']:.0f} MiB (" in result.stdout
        assert t["torch_imported"] == (backend != "numpy")
    assert len(r["sample"]) == 6 and all(s["chars_per_s"] > 0 for s in r["sample"].values())
    assert r["sample"]["numpy batch"]["batch"] == r["sample"]["torch batch"]["batch"] == 32


def test_the_table_says_na_for_memory_it_could_not_measure(quick, tmp_path):
    from benchmarks.__main__ import table
    from benchmarks.loops import proc_status_mib, reset_peak
    assert proc_status_mib(tmp_path / "no-proc" / "status") is None           # as off Linux
    assert not reset_peak(tmp_path / "no-proc" / "clear_refs")
    r = copy.deepcopy(quick[1])
    r["train"]["torch"].update(peak_mib=None, rss_before_loop_mib=None, loop_peak_mib=None)  # no /proc
    r["train"]["numpy"].update(loop_peak_mib=None)                                          # no clear_refs
    rows = {line.split(" | ")[0]: line for line in table(r).splitlines()}
    assert rows["| training step, torch_gpt, float32"].endswith("| n/a |")
    assert rows["| training step, numpy_gpt, float32"].endswith(" MiB (n/a in the loop) |")


def test_numpy_gpt_memory_is_its_own_childs_and_it_never_imports_torch():
    """The numpy_gpt row's peak memory is its child's own, however big the parent that starts it.

    getrusage's ru_maxrss in the child would fail this test, so the benchmark reads VmHWM instead: a
    child that subprocess starts carries its parent's peak across exec (measured here: under a parent
    holding 1 GiB, a bare python -c reported 1050 MiB by ru_maxrss and 11 MiB by VmHWM).
    """
    from benchmarks.__main__ import training
    from benchmarks.loops import proc_status_mib
    if proc_status_mib() is None:
        pytest.skip("no /proc/self/status (not Linux): the benchmark reports memory as n/a")
    big = np.ones(64 * 2 ** 20)                                  # 512 MiB of float64, all of it resident
    parent_peak = proc_status_mib()["VmHWM"]
    t = training("numpy", quick=True, repeats=1)
    assert parent_peak > 512 and big[-1] == 1
    # the toy model's child holds Python, NumPy and numpy_gpt: about 50 MiB; 256 leaves room and is
    # still half of what the parent holds in big alone
    assert t["peak_mib"] < 256, (t, parent_peak)
    assert t["torch_imported"] is False


def test_help():
    result = run("-m", "benchmarks", "--help")
    assert result.returncode == 0 and "--quick" in result.stdout and "--json" in result.stdout


def test_flop_formula():
    from benchmarks.loops import flops_per_step
    from numpy_gpt import GPTConfig
    # the kid: 794,752 matmul parameters (12 * 4 * 128^2 + 128 * 65), 4,096 tokens per step; attention
    # 12 * L * T * C per token with the masked half of the scores (PaLM, nanoGPT), 6 * L * T * C without
    assert flops_per_step(GPTConfig(), 32) == 4096 * (6 * 794_752 + 12 * 4 * 128 * 128)
    assert round(flops_per_step(GPTConfig(), 32) / 1e9, 1) == 22.8
    assert flops_per_step(GPTConfig(), 32, causal_only=True) == 4096 * (6 * 794_752 + 6 * 4 * 128 * 128)
    assert round(flops_per_step(GPTConfig(), 32, causal_only=True) / 1e9, 1) == 21.1


def test_parts_runs_every_comparison_the_docs_cite():
    """python -m benchmarks.parts --quick: a row for each routine of each part (speed is not asserted)."""
    result = run("-m", "benchmarks.parts", "--quick", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    rows = [line.split(" | ")[:2] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [["| attention, one layer, bf16 autocast", "scaled_dot_product_attention"],
                        ["| attention, one layer, bf16 autocast", "causal_products"],
                        *[["| Linear c_fc, one layer, float32", name]
                          for name in ["F.linear"] + ["OneDNNLinear"] * torch_gpt.kernels.ONEDNN_LINEAR],
                        ["| dropout masks, one step", "numpy_gpt.model.dropout_masks"],
                        ["| numpy_gpt forward and backward, one batch", "one part"],
                        ["| numpy_gpt forward and backward, one batch", rows[-3][1]],
                        ["| numpy_gpt val loss, 2 batches", "one batch after another"],
                        ["| numpy_gpt val loss, 2 batches", rows[-1][1]]]
    assert rows[-3][1].endswith("parts, one a thread") and rows[-1][1].startswith("a batch a thread, on ")
    assert all(float(line.rsplit("|", 2)[1]) > 0 for line in result.stdout.splitlines()[4:])


def test_the_site_benchmark_counts_the_calls_that_generate_makes():
    """benchmarks.site's multiply-adds: the prefills and decodes that numpy_gpt.sampling.generate really
    makes, past several slides of the window, each costed one position at a time."""
    from benchmarks.site import multiply_adds
    from numpy_gpt import GPTConfig
    from numpy_gpt.sampling import generate
    config = GPTConfig(vocab_size=7, block_size=8, n_layer=3, n_head=2, n_embd=4)
    L, C, V = config.n_layer, config.n_embd, config.vocab_size
    calls = []
    prefill = lambda ids: calls.append(("prefill", len(ids))) or np.zeros(V)         # noqa: E731
    decode = lambda token, pos: calls.append(("decode", pos)) or np.zeros(V)         # noqa: E731
    list(generate(prefill, decode, [1, 2, 3], 30, config.block_size, np.random.default_rng(0)))

    def position(t, layers):                     # position t, attending to t + 1 keys, through layers
        return layers * (3 * C * C + 2 * (t + 1) * C + C * C + 8 * C * C)

    expected = {"prefill": 0, "decode": 0}
    for kind, n in calls:
        if kind == "decode":
            expected[kind] += position(n, L) + V * C
        else:                                    # the last layer: keys and values for all, the rest for the last
            expected[kind] += sum(position(t, L - 1) + 3 * C * C for t in range(n)) \
                + position(n - 1, 1) - 3 * C * C + V * C
    prefills, decodes, count, worker = multiply_adds(config, 3, 30)
    assert count == sum(kind == "prefill" for kind, _ in calls) > 5              # the prompt's, then slides
    assert (prefills, decodes) == (expected["prefill"], expected["decode"])
    # peek/web/ahead.js's worker: in each slid window (6 of block_size 8), the keys and values of the
    # positions known when the window before held 6 tokens, those past its first 8 + 1 - 6 = 3
    primed = 6 - 3
    assert worker == (count - 1) * sum(position(t, L - 1) + 3 * C * C for t in range(primed)) > 0
