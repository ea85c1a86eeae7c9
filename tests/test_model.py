"""The NumPy model as a whole: parameter count and names, init, and the full backward against finite
differences of the loss for every parameter tensor."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_gpt import GPTConfig, UserError, gpt_backward, gpt_forward, init_params, num_params
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


@settings(max_examples=6, deadline=None)
@given(n_layer=st.integers(1, 2), n_head=st.integers(1, 2), head_size=st.integers(1, 3),
       vocab=st.integers(2, 7), T=st.integers(1, 5), B=st.integers(1, 2), seed=st.integers(0, 2**32 - 1))
def test_whole_model_gradient_matches_finite_differences(n_layer, n_head, head_size, vocab, T, B, seed):
    """d loss / d parameter, for every element of every parameter tensor, float64."""
    config = GPTConfig(vocab_size=vocab, block_size=T + 1, n_layer=n_layer, n_head=n_head, n_embd=n_head * head_size)
    rng = np.random.default_rng(seed)
    params = random_weights(config, rng)
    idx, targets = rng.integers(0, vocab, (B, T)), rng.integers(0, vocab, (B, T))
    _, loss, _, cache = gpt_forward(params, config, idx, targets)
    grads = gpt_backward(params, config, cache)
    assert list(grads) == list(params)
    for name, p in params.items():
        numeric = numeric_grad(lambda: gpt_forward(params, config, idx, targets)[1], p)
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype
        assert_grad_close(grads[name], numeric, name)


def test_every_parameter_gets_a_gradient():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
    rng = np.random.default_rng(0)
    params = random_weights(config, rng)
    idx = np.arange(16).reshape(2, 8) % 11          # every position, most tokens
    _, _, _, cache = gpt_forward(params, config, idx, rng.integers(0, 11, (2, 8)))
    grads = gpt_backward(params, config, cache)
    for name, g in grads.items():
        if name == "wte.weight":
            assert np.abs(g[:11]).sum(1).all(), "each token that appears gets a gradient row"
        elif not name.endswith("c_attn.bias"):     # the key bias's gradient is 0 (softmax ignores shifts)
            assert np.abs(g).min() > 0 or np.abs(g).max() > 1e-6, name


def test_forward_shapes_and_activation_names():
    config = GPTConfig(vocab_size=13, block_size=9, n_layer=2, n_head=3, n_embd=6)
    params = init_params(config, dtype=np.float64)
    idx = np.zeros((4, 7), dtype=np.int64)
    logits, loss, acts, _ = gpt_forward(params, config, idx)
    assert logits.shape == (4, 7, 13) and loss is None
    assert acts["h.1.attn.att"].shape == (4, 3, 7, 7) and acts["h.0.attn.q"].shape == (4, 3, 7, 2)
    assert acts["h.0.mlp.c_fc"].shape == (4, 7, 24) and acts["ln_f"].shape == (4, 7, 6)
    per_block = ["ln_1", "attn.q", "attn.k", "attn.v", "attn.att", "attn.y", "attn.c_proj", "res_attn",
                 "ln_2", "mlp.c_fc", "mlp.gelu", "mlp.c_proj", "res_mlp"]
    assert set(acts) == {"embed", "ln_f", "logits"} | {f"h.{l}.{n}" for l in range(2) for n in per_block}
