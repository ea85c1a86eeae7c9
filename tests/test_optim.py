"""AdamW, clipping and the schedule, against the formulas worked by hand in plain Python floats."""
import math

import numpy as np
import pytest

from numpy_gpt.optim import adamw_init, adamw_step, clip_grad_norm, decays, lr_at


def adamw_by_hand(p, grads, lr, b1, b2, eps, wd):
    """The AdamW recurrence for one scalar, one step per gradient, written out in Python floats."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * wd * p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


def test_adamw_matches_the_formula_by_hand():
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.99, 1e-8, 0.1
    w0 = np.array([[0.5, -1.5], [2.0, 0.0]])          # 2-D: decayed
    b0 = np.array([0.25, -0.75])                       # 1-D: not decayed
    g_steps = [(np.array([[0.2, -0.1], [0.05, 3.0]]), np.array([1.0, -2.0])),
               (np.array([[-0.4, -0.3], [0.01, 1.0]]), np.array([0.5, 0.5])),
               (np.array([[0.1, 0.2], [-0.3, -2.0]]), np.array([-1.0, 0.1]))]
    params = {"w": w0.copy(), "b": b0.copy()}
    state = adamw_init(params)
    for gw, gb in g_steps:
        adamw_step(params, {"w": gw, "b": gb}, state, lr, (b1, b2), eps, wd)
    assert state["step"] == 3
    for (i, j), p0 in np.ndenumerate(w0):
        expected = adamw_by_hand(p0, [g[0][i, j] for g in g_steps], lr, b1, b2, eps, wd)
        assert params["w"][i, j] == pytest.approx(expected, rel=1e-14, abs=1e-15)
    for i, p0 in enumerate(b0):
        expected = adamw_by_hand(p0, [g[1][i] for g in g_steps], lr, b1, b2, eps, wd=0.0)
        assert params["b"][i] == pytest.approx(expected, rel=1e-14, abs=1e-15)


def test_first_adamw_step_is_lr_times_sign():
    """After bias correction the first update is lr * g / (|g| + eps): a step of lr against the gradient."""
    params = {"b": np.array([1.0, 1.0, 1.0])}
    state = adamw_init(params)
    adamw_step(params, {"b": np.array([3.0, -1e-3, 0.0])}, state, lr=0.01)
    np.testing.assert_allclose(params["b"], [0.99, 1.01, 1.0], rtol=1e-6)


def test_weight_decay_applies_to_2d_weights_only():
    assert decays("h.0.attn.c_attn.weight", np.zeros((3, 2))) and decays("wte.weight", np.zeros((5, 2)))
    assert not decays("h.0.ln_1.weight", np.zeros(3)) and not decays("h.0.mlp.c_fc.bias", np.zeros(3))
    params = {"w": np.ones((2, 2)), "b": np.ones(2)}
    adamw_step(params, {"w": np.zeros((2, 2)), "b": np.zeros(2)}, adamw_init(params), lr=0.5, weight_decay=0.1)
    np.testing.assert_allclose(params["w"], 0.95)      # shrunk by lr * wd even with a zero gradient
    np.testing.assert_array_equal(params["b"], 1.0)


def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0], [4.0]])}      # global norm 5
    clipped, norm = clip_grad_norm(grads, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped["a"], [3.0 / (5 + 1e-6), 0.0])     # torch: max_norm / (norm + 1e-6)
    np.testing.assert_allclose(clipped["b"], [[0.0], [4.0 / (5 + 1e-6)]])
    same, norm = clip_grad_norm(grads, 10.0)                                # under the limit: untouched
    assert norm == 5.0 and same["a"] is grads["a"]
    off, _ = clip_grad_norm(grads, 0.0)
    assert off["b"] is grads["b"]
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])                 # inputs never modified


def test_lr_schedule():
    args = dict(lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)
    assert lr_at(0, **args) == pytest.approx(0.1)                  # warmup: (step+1)/warmup
    assert lr_at(4, **args) == pytest.approx(0.5)
    assert lr_at(9, **args) == pytest.approx(1.0)
    assert lr_at(10, **args) == pytest.approx(1.0)                 # cosine starts at the peak
    assert lr_at(60, **args) == pytest.approx(0.55)                # halfway: the mean of lr and min_lr
    assert lr_at(110, **args) == pytest.approx(0.1)                # and ends at min_lr
    lrs = [lr_at(s, **args) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(0, lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=5) == 1.0
