"""The NumPy model as a whole: parameter count and names, init, and the full backward against finite
differences of the loss for every parameter tensor."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_gpt import GPTConfig, UserError, gpt_backward, gpt_forward, init_params, num_params
import numpy_gpt.model
from numpy_gpt.layers import gelu_backward
from numpy_gpt.model import param_shapes

from conftest import assert_grad_close, numeric_grad


def test_the_kid_has_826368_parameters():
    # counted by hand: V*C + T*C + L*(12*C*C + 13*C) + 2*C + C*V with V=65, T=C=128, L=4
    assert 65 * 128 + 128 * 128 + 4 * (12 * 128 * 128 + 13 * 128) + 2 * 128 + 128 * 65 == 826_368
    assert num_params(init_params(GPTConfig())) == 826_368


def test_parameter_names_follow_torch_state_dict_order():
    names = list(param_shapes(GPTConfig(n_layer=1)))
    assert names == ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.weight",
                     "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight", "h.0.attn.c_proj.bias", "h.0.ln_2.weight",
                     "h.0.ln_2.bias", "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias", "h.0.mlp.c_proj.weight",
                     "h.0.mlp.c_proj.bias", "ln_f.weight", "ln_f.bias", "lm_head.weight"]


def test_gpt2_init():
    config = GPTConfig()
    p = init_params(config, seed=3)
    assert all(a.dtype == np.float32 for a in p.values())
    assert p["h.0.ln_1.weight"].min() == p["h.0.ln_1.weight"].max() == 1
    assert not p["h.2.mlp.c_fc.bias"].any() and not p["ln_f.bias"].any()
    assert abs(p["h.0.mlp.c_fc.weight"].std() - 0.02) < 0.0005           # 65,536 draws: std error ~6e-5
    assert abs(p["h.1.attn.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 0.0005
    assert abs(p["h.1.mlp.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 0.0005
    assert abs(p["wte.weight"].std() - 0.02) < 0.001
    np.testing.assert_array_equal(init_params(config, seed=3)["wte.weight"], p["wte.weight"])
    assert not np.array_equal(init_params(config, seed=4)["wte.weight"], p["wte.weight"])


def test_config_checks_itself():
    with pytest.raises(UserError, match="divisible by n_head"):
        GPTConfig(n_embd=130, n_head=4)
    with pytest.raises(UserError, match="n_layer must be a positive integer"):
        GPTConfig(n_layer=0)
    with pytest.raises(UserError, match="block_size must be a positive integer"):
        GPTConfig(block_size=-3)
    with pytest.raises(UserError, match="vocab_size must be a positive integer"):
        GPTConfig(vocab_size=2.5)


def random_weights(config, rng):
    """Non-trivial weights: LayerNorm gains and all biases random too, so no gradient path hides."""
    params = {name: rng.standard_normal(shape) * (0.3 if len(shape) == 2 else 0.5)
              for name, shape in param_shapes(config).items()}
    for name in params:
        if params[name].ndim == 1 and name.endswith("weight"):     # LayerNorm gains around 1
            params[name] += 1.0
    return params


@st.composite
def small_models(draw):
    """-> (config, idx, targets, seed): 1 or 2 layers and heads, head size up to 3, T up to 5, B up to 2.

    n_embd is at least 3. LayerNorm over one channel outputs its bias whatever its input, so with
    n_embd = 1 everything upstream of ln_f has a gradient of exactly zero, whatever the blocks compute,
    and the check below passes any bug in them (we planted one: it passed). Over two channels it outputs
    +-1/sqrt(1 + eps/d^2) for d half the two channels' difference: nearly constant, so what the blocks
    contribute shrinks to ~eps/d^2, and the planted 10% error showed as 4e-6 to 2e-5 of a gradient's
    scale, against 5e-2 to 1e-1 from n_embd = 3 on, and a bar of 1e-6. The parity properties draw
    n_embd >= 3 for the same reason (tests/test_parity.py).
    """
    n_head = draw(st.integers(1, 2))
    head_size = draw(st.integers(-(-3 // n_head), 3))          # the smallest head size giving n_embd >= 3
    T, vocab = draw(st.integers(1, 5)), draw(st.integers(2, 7))
    config = GPTConfig(vocab_size=vocab, block_size=T + 1, n_layer=draw(st.integers(1, 2)), n_head=n_head,
                       n_embd=n_head * head_size)
    B, seed = draw(st.integers(1, 2)), draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return config, rng.integers(0, vocab, (B, T)), rng.integers(0, vocab, (B, T)), seed


@settings(max_examples=6, deadline=None)
@given(small_models())
def test_whole_model_gradient_matches_finite_differences(case):
    """d loss / d parameter, for every element of every parameter tensor, float64."""
    config, idx, targets, seed = case
    params = random_weights(config, np.random.default_rng(seed))
    _, loss, cache = gpt_forward(params, config, idx, targets)
    grads = gpt_backward(params, config, cache)
    assert list(grads) == list(params)
    for name, p in params.items():
        numeric = numeric_grad(lambda: gpt_forward(params, config, idx, targets)[1], p)
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype
        assert_grad_close(grads[name], numeric, name)


def gelu_backward_10_percent_high(dout, cache):
    """A planted bug inside every block: GELU's gradient 10% too large."""
    return 1.1 * gelu_backward(dout, cache)


@settings(max_examples=20, deadline=None)
@given(small_models())
def test_whole_model_check_catches_a_wrong_block_gradient_on_every_shape(case):
    """The shapes above leave the blocks visible: with GELU's backward 10% off, the finite-difference
    check of the first block's MLP weight fails on every draw (with n_embd = 1 it passed)."""
    config, idx, targets, seed = case
    params = random_weights(config, np.random.default_rng(seed))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(numpy_gpt.model, "gelu_backward", gelu_backward_10_percent_high)
        grads = gpt_backward(params, config, gpt_forward(params, config, idx, targets)[2])
    w = params["h.0.mlp.c_fc.weight"]
    with pytest.raises(AssertionError, match="h.0.mlp.c_fc.weight: max error"):
        assert_grad_close(grads["h.0.mlp.c_fc.weight"],
                          numeric_grad(lambda: gpt_forward(params, config, idx, targets)[1], w), "h.0.mlp.c_fc.weight")


def gradient_problems(grads, n_embd):
    """-> what is wrong with the coverage of grads, one line per tensor (empty: nothing).

    Every tensor's largest entry is above 1e-3 of the largest gradient anywhere (rounding is ~1e-16 of
    it), and every entry of it above 1e-9 of its own largest: with random weights, every input token
    and every position, no entry's true gradient is zero (the smallest, 3e-6 of its tensor's largest, is
    fixed by the seeded weights and batch, not by the CPU, whose rounding moves it by ~1e-16), and an entry
    a backward misses comes out exactly 0. The one exception is the key bias,
    c_attn.bias[C:2C]: it adds q . b_k to every score of a row, which softmax ignores, so its true
    gradient is exactly 0 and what is computed is rounding, ~1e-17 of the largest gradient: it must be
    below 1e-12 of it, while the query and value parts obey the rule for entries.
    """
    C = n_embd
    top = max(float(np.abs(g).max()) for g in grads.values())
    problems = []
    for name, g in grads.items():
        parts = {name: np.abs(g)}
        if name.endswith("c_attn.bias"):
            parts = {name + "[:C] (query)": np.abs(g[:C]), name + "[2C:] (value)": np.abs(g[2 * C:])}
            if np.abs(g[C:2 * C]).max() > 1e-12 * top:
                problems.append(f"{name}[C:2C] (key) is {np.abs(g[C:2 * C]).max() / top:.1e} of the largest "
                                f"gradient; its true gradient is 0")
        for part, a in parts.items():
            if a.max() <= 1e-3 * top:
                problems.append(f"{part}: largest entry only {a.max() / top:.1e} of the largest gradient")
            elif a.min() <= 1e-9 * a.max():
                problems.append(f"{part}: {int((a <= 1e-9 * a.max()).sum())} of {a.size} entries get no gradient")
    return problems


def every_token_and_position():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
    rng = np.random.default_rng(0)
    params = random_weights(config, rng)
    idx = np.arange(16).reshape(2, 8) % 11          # every position, every token
    _, _, cache = gpt_forward(params, config, idx, rng.integers(0, 11, (2, 8)))
    return config, gpt_backward(params, config, cache)


def test_every_parameter_gets_a_gradient():
    config, grads = every_token_and_position()
    assert gradient_problems(grads, config.n_embd) == []


def test_gradient_coverage_check_catches_a_missing_gradient():
    """Each way a backward can miss a gradient is named (the check this replaced, max|g| > 1e-6 of any
    entry, with c_attn.bias skipped, passed all three)."""
    config, grads = every_token_and_position()
    C = config.n_embd
    dv_dropped = grads["h.0.attn.c_attn.weight"] * (np.arange(3 * C) < 2 * C)[:, None]       # (3C, C)
    no_value_weight = dict(grads, **{"h.0.attn.c_attn.weight": dv_dropped})
    no_query_bias = dict(grads, **{"h.1.attn.c_attn.bias": grads["h.1.attn.c_attn.bias"] * (np.arange(3 * C) >= C)})
    key_bias = grads["h.0.attn.c_attn.bias"].copy()
    key_bias[C + 2] = 1e-3
    assert gradient_problems(no_value_weight, C) == ["h.0.attn.c_attn.weight: 64 of 192 entries get no gradient"]
    assert gradient_problems(no_query_bias, C) == ["h.1.attn.c_attn.bias[:C] (query): largest entry only "
                                                   "0.0e+00 of the largest gradient"]
    assert gradient_problems(dict(grads, **{"h.0.attn.c_attn.bias": key_bias}), C)[0].startswith(
        "h.0.attn.c_attn.bias[C:2C] (key) is")


def test_forward_shapes_and_cache_names():
    """The forward's cache holds each layer's cache under the layer's name (torch_gpt's module names)."""
    config = GPTConfig(vocab_size=13, block_size=9, n_layer=2, n_head=3, n_embd=6)
    params = init_params(config, dtype=np.float64)
    idx = np.zeros((4, 7), dtype=np.int64)
    logits, loss, cache = gpt_forward(params, config, idx)
    assert logits.shape == (4, 7, 13) and loss is None
    q, k, v, att, _ = cache["h.1.attn"]
    assert att.shape == (4, 3, 7, 7) and q.shape == k.shape == v.shape == (4, 3, 7, 2)
    assert cache["h.0.mlp.gelu"][0].shape == (4, 7, 24) and cache["lm_head"][0].shape == (4, 7, 6)
    per_block = ["ln_1", "attn.c_attn", "attn", "attn.c_proj", "attn.dropout", "ln_2", "mlp.c_fc", "mlp.gelu",
                 "mlp.c_proj", "mlp.dropout"]
    assert set(cache) == {"embed", "ln_f", "lm_head"} | {f"h.{l}.{n}" for l in range(2) for n in per_block}
    assert "loss" in gpt_forward(params, config, idx, idx)[2]
