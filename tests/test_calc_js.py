"""peek/web/calc.js, the model-size calculator, run by node: its parameter counts equal numpy_gpt.model.param_shapes
for drawn shapes, and its FLOPs equal the matrix products numpy_gpt's forward and backward really run, counted
as they happen."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_gpt import GPTConfig, init_params
from numpy_gpt.model import gpt_backward, gpt_forward, param_shapes

from conftest import ROOT

NODE = shutil.which("node")
if NODE is None:
    if os.environ.get("CI") == "true":
        pytest.fail("node is not on PATH, and CI=true: CI must test peek's calculator", pytrace=False)
    pytest.skip("node is not on PATH: peek/web/calc.js is not tested", allow_module_level=True)

CALC = (ROOT / "peek" / "web" / "calc.js").as_uri()
RUNNER = f"""
import * as calc from {json.dumps(CALC)};
import {{ readFileSync }} from "node:fs";
const calls = JSON.parse(readFileSync(0, "utf-8"));
const answer = ([name, ...args]) => typeof calc[name] === "function" ? calc[name](...args) : calc[name];
process.stdout.write(JSON.stringify(calls.map(answer)));
"""


def calc(*calls):
    """[name, *args] for each call -> what calc.js's function of that name returns, through JSON (or, for a
    constant, its value)."""
    proc = subprocess.run([NODE, "--input-type=module", "-e", RUNNER], input=json.dumps(calls),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def shape(c):
    return {"vocab_size": c.vocab_size, "block_size": c.block_size, "n_layer": c.n_layer, "n_head": c.n_head,
            "n_embd": c.n_embd}


def counts_from_param_shapes(config):
    """Sum param_shapes by part, reading each tensor's name."""
    parts = dict.fromkeys(["embeddings", "attention", "mlp", "layernorm", "head"], 0)
    for name, s in param_shapes(config).items():
        part = ("embeddings" if name in ("wte.weight", "wpe.weight") else "head" if name == "lm_head.weight"
                else "attention" if ".attn." in name else "mlp" if ".mlp." in name else "layernorm")
        parts[part] += int(np.prod(s))
    return {"total": sum(parts.values()), **parts}


def test_the_kid_and_nanogpt():
    kid, nano = calc(["param_counts", {"vocab_size": 65, "block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128}],
                     ["param_counts", {"vocab_size": 65, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384}])
    assert kid["total"] == 826_368 == sum(int(np.prod(s)) for s in param_shapes(GPTConfig()).values())
    assert nano == counts_from_param_shapes(GPTConfig(65, 256, 6, 6, 384))
    assert calc(["KID"], ["NANOGPT_SHAKESPEARE_CHAR"]) == [shape(GPTConfig()), shape(GPTConfig(65, 256, 6, 6, 384))]


configs = st.builds(lambda V, T, L, H, d: GPTConfig(V, T, L, H, H * d), st.integers(1, 300), st.integers(1, 1024),
                    st.integers(1, 24), st.integers(1, 16), st.integers(1, 128))


@settings(max_examples=12, deadline=None)       # each example starts node once, for up to 8 shapes
@given(st.lists(configs, min_size=1, max_size=8))
def test_param_counts_equal_param_shapes(cs):
    results = calc(*[["param_counts", shape(c)] for c in cs])
    for c, got in zip(cs, results):
        assert got == counts_from_param_shapes(c), c


class Counting(np.ndarray):
    """An array that adds the FLOPs of every matrix product it takes part in to Counting.flops: 2 M K N for
    (M, K) @ (K, N), times the broadcast batch of a stacked product."""
    flops = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [np.asarray(x) if isinstance(x, Counting) else x for x in inputs]
        if "out" in kwargs:                                             # in place: out += b
            kwargs["out"] = tuple(np.asarray(x) if isinstance(x, Counting) else x for x in kwargs["out"])
        if ufunc is np.matmul and method == "__call__":
            a, b = plain
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            Counting.flops += 2 * int(np.prod(batch)) * a.shape[-2] * a.shape[-1] * b.shape[-1]
        out = getattr(ufunc, method)(*plain, **kwargs)
        return out.view(Counting) if isinstance(out, np.ndarray) else out


def counted_step_flops(config, B, seed=0):
    """The FLOPs of the matrix products in one numpy_gpt forward and backward on B random sequences of T."""
    rng = np.random.default_rng(seed)
    params = {k: p.view(Counting) for k, p in init_params(config, seed=seed, dtype=np.float64).items()}
    x = rng.integers(0, config.vocab_size, (B, config.block_size))
    y = rng.integers(0, config.vocab_size, (B, config.block_size))
    Counting.flops = 0
    cache = gpt_forward(params, config, x, y)[-1]
    gpt_backward(params, config, cache)
    return Counting.flops


def test_counting_sees_a_product():
    Counting.flops = 0
    np.ones((3, 4)).view(Counting) @ np.ones((4, 5))
    assert Counting.flops == 2 * 3 * 4 * 5


@pytest.mark.parametrize("config, B", [(GPTConfig(), 2), (GPTConfig(11, 16, 2, 3, 18), 3),
                                       (GPTConfig(7, 5, 1, 1, 4), 1), (GPTConfig(65, 64, 3, 2, 32), 4)])
def test_step_flops_equal_the_products_numpy_gpt_runs(config, B):
    [got] = calc(["step_flops", shape(config), B])
    assert got["total"] == counted_step_flops(config, B) == got["weights"] + got["attention"]


def test_memory_and_time():
    kid = shape(GPTConfig())
    nano = {**kid, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384}
    memory, same, double, nano_time, flops_kid, flops_nano = calc(
        ["memory_bytes", kid], ["train_time_estimate", kid, kid, 600, 5000],
        ["train_time_estimate", kid, kid, 600, 10000, 5000], ["train_time_estimate", nano, kid, 600, 5000], ["step_flops", kid, 32], ["step_flops", nano, 32])
    assert memory == {"total": 16 * 826_368, "weights": 4 * 826_368, "gradients": 4 * 826_368, "adam": 8 * 826_368}
    assert same == 600 and double == 1200
    assert nano_time == pytest.approx(600 * flops_nano["total"] / flops_kid["total"], rel=1e-12)
