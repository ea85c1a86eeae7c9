"""python -m benchmarks --quick: every benchmark runs at toy sizes (speed is not asserted here)."""
import json

import torch_gpt.model

from test_numpy_cli import run


def test_quick_benchmarks_run_and_report_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = run("-m", "benchmarks", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rows = ["float32 matmul peak, numpy", "float32 matmul peak, torch mm", "training step, torch_gpt |",
            "training step, numpy_gpt", "numpy_gpt step / torch_gpt step", "numpy_gpt, KV cache",
            "numpy_gpt, full recompute", "torch_gpt, KV cache", "torch_gpt, full recompute"]
    if torch_gpt.model.ONEDNN_LINEAR:
        rows += ["float32 matmul peak, torch oneDNN", "training step, torch_gpt, Linear on torch's mm"]
    for row in rows:
        assert row in result.stdout, row
    r = json.loads(out.read_text())
    assert r["quick"] and r["peak_gflops"] > 0 and r["flops_per_step"] > 0
    assert r["peak_gflops"] == max(p["gflops"] for p in r["peak"].values())
    for backend in ("torch", "torch-mm", "numpy") if torch_gpt.model.ONEDNN_LINEAR else ("torch", "numpy"):
        t = r["train"][backend]
        assert t["seconds"]["n"] >= 3 and t["seconds"]["min"] <= t["seconds"]["median"] <= t["seconds"]["max"]
        assert t["peak_rss_mib"] > 0 and 0 < t["fraction_of_peak"]
    assert len(r["sample"]) == 4 and all(s["chars_per_s"] > 0 for s in r["sample"].values())


def test_help():
    result = run("-m", "benchmarks", "--help")
    assert result.returncode == 0 and "--quick" in result.stdout and "--json" in result.stdout


def test_flop_formula():
    from benchmarks.loops import flops_per_step
    from numpy_gpt import GPTConfig
    # the kid: 794,752 matmul parameters (12 * 4 * 128^2 + 128 * 65), 4,096 tokens per step
    assert flops_per_step(GPTConfig(), 32) == 4096 * (6 * 794_752 + 12 * 4 * 128 * 128)
    assert round(flops_per_step(GPTConfig(), 32) / 1e9, 1) == 22.8
