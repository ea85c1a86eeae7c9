"""peek's JavaScript training (peek/web/train.js) against numpy_gpt: every layer's gradients, clipping, AdamW,
the schedule and the batches, and rungs 1 and 2 of the ladder trained step by step to the same weights.

node runs the real files through tests/js/train_driver.mjs; numpy_gpt computes every expected value here,
in float64, from the same inputs.
"""
import json
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_gpt import layers
from numpy_gpt.data import batch_rng, eval_batches, get_batch
from numpy_gpt.optim import adamw_init, adamw_step, clip_grad_norm, lr_at

from conftest import ROOT

NODE = shutil.which("node")
if NODE is None:
    if os.environ.get("CI") == "true":
        pytest.fail("node is not on PATH, and CI=true: CI must test peek's JavaScript training", pytrace=False)
    pytest.skip("node is not on PATH: peek's JavaScript training (peek/web/train.js) is not tested",
                allow_module_level=True)

DRIVER = ROOT / "tests" / "js" / "train_driver.mjs"

# One layer: both sides compute in float64 from the same inputs, and differ only in the order of their
# sums (BLAS and einsum against train.js's loops), about 1e-16 relative per sum; the largest sum here has
# a few hundred terms, so ~1e-14 of the scale at worst. 1e-12 leaves two orders of margin, while a real
# slip (a lost scale, a term of the softmax backward, a wrong index) moves a gradient by 1e-3 or more.
LAYER_TOL = 1e-12


def js(tasks):
    """Run the driver on tasks -> their results."""
    proc = subprocess.run([NODE, str(DRIVER)], input=json.dumps({"tasks": tasks}), capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"]


def flat(a):
    return np.asarray(a, dtype=np.float64).ravel().tolist()


def relative_error(got, expected):
    """max |got - expected| over the scale of expected, max |expected|."""
    got, expected = np.asarray(got, dtype=np.float64).ravel(), np.asarray(expected, dtype=np.float64).ravel()
    assert got.shape == expected.shape, f"{got.shape} numbers, numpy_gpt has {expected.shape}"
    scale = np.abs(expected).max()
    return np.abs(got - expected).max() / (scale if scale > 0 else 1.0)


def assert_close(got, expected, name, tol=LAYER_TOL):
    err = relative_error(got, expected)
    assert err < tol, f"{name}: max difference {err:.3e} of its scale (allowed {tol:.0e})"


# ------------------------------------------------------------------------------------------------
# the random numbers and the batches

def test_integers_equal_numpy_bit_for_bit():
    """Generator.integers(low, high, size) for list seeds, ranges of 1, small, large and exactly 2**32,
    called several times on one generator (a uint32 half left over carries from one call to the next)."""
    cases = [([1337, 2, 0, 0], 0, 150_000, 16), ([0], 0, 1, 5), ([1, 2, 3], -5, 7, 33), ([7, 4, 1], 0, 2**32, 9),
             ([2**40, 5], 10, 3_000_000_010, 31), ([3], 0, 2**31 + 1, 64)]
    results = js([{"op": "integers", "seed": seed, "low": low, "high": high, "size": size, "calls": 3}
                  for seed, low, high, size in cases])
    for (seed, low, high, size), got in zip(cases, results):
        rng = np.random.default_rng(seed)
        assert got == [rng.integers(low, high, size=size).tolist() for _ in range(3)], (seed, low, high)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**64), n=st.integers(2, 2**32))
def test_integers_equal_numpy_for_drawn_seeds_and_ranges(seed, n):
    [got] = js([{"op": "integers", "seed": [seed, 2, 7], "low": 0, "high": n, "size": 40, "calls": 1}])
    assert got == [np.random.default_rng([seed, 2, 7]).integers(0, n, size=40).tolist()]


def test_batches_equal_numpy():
    """get_batch with batch_rng(seed, step), and eval_batches' fixed batches, window for window."""
    ids = np.random.default_rng(0).integers(0, 65, size=5_000)
    steps = [0, 1, 99, 12_345]
    results = js([{"op": "batch", "ids": ids.tolist(), "batch_size": 16, "block_size": 64, "seed": 1337, "step": s}
                  for s in steps] +
                 [{"op": "eval_batches", "ids": ids.tolist(), "n": 3, "batch_size": 8, "block_size": 32, "seed": 1337,
                   "split": 1}])
    for step, got in zip(steps, results):
        x, y = get_batch(ids, 16, 64, batch_rng(1337, step))
        assert got == {"x": x.ravel().tolist(), "y": y.ravel().tolist()}, f"step {step}"
    expected = eval_batches(ids, 3, 8, 32, 1337, split=1)
    assert results[-1] == [{"x": x.ravel().tolist(), "y": y.ravel().tolist()} for x, y in expected]


# ------------------------------------------------------------------------------------------------
# the layers: random inputs, weights and upstream gradients, never all ones or zeros

shapes = st.fixed_dictionaries({"B": st.integers(1, 3), "T": st.integers(1, 9), "H": st.integers(1, 3),
                                "D": st.integers(1, 6), "V": st.integers(2, 11), "seed": st.integers(0, 2**32)})


@settings(max_examples=6, deadline=None)
@given(s=shapes)
def test_layer_gradients_equal_numpy(s):
    """embedding, linear (with and without a bias), attention and cross-entropy: out and every gradient."""
    B, T, H, D, V = s["B"], s["T"], s["H"], s["D"], s["V"]
    C = H * D
    rng = np.random.default_rng(s["seed"])
    idx, targets = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    wte, wpe = rng.standard_normal((V, C)), rng.standard_normal((T + 2, C))
    x, w, b = rng.standard_normal((B, T, C)), rng.standard_normal((3 * C, C)), rng.standard_normal(3 * C)
    qkv = 2 * rng.standard_normal((B, T, 3 * C))                  # scores of several units: peaked attention
    logits = 3 * rng.standard_normal((B, T, V))
    d_embed, d_linear, d_attn = (rng.standard_normal(shape) for shape in [(B, T, C), (B, T, 3 * C), (B, T, C)])
    dloss = float(rng.uniform(0.5, 2.0))
    emb, lin, lin0, attn, ce = js([
        {"op": "embedding", "idx": flat(idx), "B": B, "wte": flat(wte), "wpe": flat(wpe), "C": C, "dout": flat(d_embed)},
        {"op": "linear", "x": flat(x), "w": flat(w), "b": flat(b), "Cout": 3 * C, "dout": flat(d_linear)},
        {"op": "linear", "x": flat(x), "w": flat(w), "b": None, "Cout": 3 * C, "dout": flat(d_linear)},
        {"op": "attention", "qkv": flat(qkv), "n_head": H, "B": B, "T": T, "dout": flat(d_attn)},
        {"op": "cross_entropy", "logits": flat(logits), "targets": flat(targets), "V": V, "dloss": dloss}])

    out, cache = layers.embedding_forward(idx, wte, wpe)
    assert_close(emb["out"], out, "embedding out")
    for name, g in zip(["dwte", "dwpe"], layers.embedding_backward(d_embed, cache)):
        assert_close(emb[name], g, f"embedding {name}")
    for got, bias in [(lin, b), (lin0, None)]:
        out, cache = layers.linear_forward(x, w, bias)
        assert_close(got["out"], out, "linear out")
        dx, dw, db = layers.linear_backward(d_linear, cache)
        for name, g in [("dx", dx), ("dw", dw)] + [("db", db)] * (bias is not None):
            assert_close(got[name], g, f"linear {name} (bias {bias is not None})")
        assert bias is not None or got["db"] is None
    out, cache = layers.attention_forward(qkv, H)
    assert_close(attn["out"], out, "attention out")
    assert_close(attn["att"], cache[3], "attention att")
    assert_close(attn["dqkv"], layers.attention_backward(d_attn, cache), "attention dqkv")
    loss, cache = layers.cross_entropy_forward(logits, targets)
    assert_close([ce["loss"]], [loss], "cross-entropy loss")
    assert_close(ce["dlogits"], layers.cross_entropy_backward(dloss, cache), "cross-entropy dlogits")


# ------------------------------------------------------------------------------------------------
# the optimizer


def test_clipping_equals_numpy():
    rng = np.random.default_rng(3)
    grads = {"a": rng.standard_normal((4, 5)), "b": rng.standard_normal(7)}
    for max_norm in [0.5, 100.0, 0.0]:
        [got] = js([{"op": "clip", "grads": {n: flat(g) for n, g in grads.items()}, "max_norm": max_norm}])
        clipped, norm = clip_grad_norm(grads, max_norm)
        assert math.isclose(got["norm"], norm, rel_tol=1e-14)
        for name, g in clipped.items():
            assert_close(got["grads"][name], g, f"clipped {name} at max_norm {max_norm}")


def test_adamw_equals_numpy_over_several_steps():
    """Five steps with a varying rate: 2-D weights decay, the 1-D bias does not."""
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((3, 4)), "bias": rng.standard_normal(4)}
    grads = [{n: rng.standard_normal(p.shape) for n, p in params.items()} for _ in range(5)]
    lrs = [3e-3, 1e-2, 2e-3, 5e-4, 1e-1]
    [got] = js([{"op": "adamw", "params": {n: flat(p) for n, p in params.items()},
                 "shapes": {n: list(p.shape) for n, p in params.items()},
                 "grads": [{n: flat(g) for n, g in step.items()} for step in grads], "lrs": lrs,
                 "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.1}])
    expected = {n: p.copy() for n, p in params.items()}
    state = adamw_init(expected)
    for step, lr in zip(grads, lrs):
        adamw_step(expected, step, state, lr, (0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for name in params:
        assert_close(got["params"][name], expected[name], f"AdamW {name}")
        assert_close(got["m"][name], state["m"][name], f"AdamW m {name}")
        assert_close(got["v"][name], state["v"][name], f"AdamW v {name}")


def test_lr_schedule_equals_numpy():
    steps = [0, 1, 50, 99, 100, 101, 500, 999, 1000, 1500]
    [got] = js([{"op": "lr_at", "steps": steps, "lr": 3e-3, "min_lr": 3e-5, "warmup_steps": 100, "total_steps": 1000}])
    for step, value in zip(steps, got):
        assert math.isclose(value, lr_at(step, 3e-3, 3e-5, 100, 1000), rel_tol=1e-15, abs_tol=0), step
