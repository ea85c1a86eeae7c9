"""torch_gpt's model: the fast path (scaled_dot_product_attention) equals the explicit path that parity
reads, its GELU is numpy_gpt's, the oneDNN Linear is F.linear, and dropout
drops the entries numpy_gpt drops."""
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from numpy_gpt import GPTConfig, gpt_backward, gpt_forward, init_params
from numpy_gpt.layers import gelu_backward, gelu_forward
from numpy_gpt.model import dropout_masks
from parity.compare import TOLERANCE, loss_tolerance
import torch_gpt.kernels
from torch_gpt.kernels import Linear, OneDNNLinear
from torch_gpt.model import GPT

CONFIG = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=4, n_embd=16)


def batch(config, B=3, T=None, seed=0):
    rng = np.random.default_rng(seed)
    T = T or config.block_size
    return (torch.from_numpy(rng.integers(0, config.vocab_size, (B, T))),
            torch.from_numpy(rng.integers(0, config.vocab_size, (B, T))))


# Two computations of one model that differ only in how attention sums: each lies within parity's
# probabilistic rounding bound of the exact value, so they differ by at most parity's tolerance (derived
# in parity/compare.py for the kid's longest path, longer than this small config's).
@pytest.mark.parametrize("dtype, tol", [(torch.float64, TOLERANCE["float64"]), (torch.float32, TOLERANCE["float32"])])
@pytest.mark.parametrize("T", [1, 7, 16])
def test_fast_path_equals_explicit_path(dtype, tol, T):
    model = GPT(CONFIG, seed=1, dtype=dtype)
    x, y = batch(CONFIG, T=T)
    fast_logits, fast_loss = model(x, y)
    fast_grads = torch.autograd.grad(fast_loss, list(model.parameters()))
    for block in model.h:
        block.attn.fast = False                     # the attention written out
    slow_logits, slow_loss = model(x, y)
    slow_grads = torch.autograd.grad(slow_loss, list(model.parameters()))
    scale = fast_logits.abs().max()
    assert (fast_logits - slow_logits).abs().max() <= tol * scale
    assert abs(fast_loss.item() - slow_loss.item()) <= tol * abs(slow_loss.item())
    for (name, _), a, b in zip(model.named_parameters(), fast_grads, slow_grads):
        assert (a - b).abs().max() <= tol * b.abs().max(), name


# The error model, entry by entry. GELU is gelu(x) = 0.5 x (1 + t), t = tanh(a), a = k (x + 0.044715 x^3),
# and gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) a'(x). Both are a handful of elementwise roundings (8, as
# parity.compare.path_roundings counts GELU) around one tanh. A vectorized tanh is accurate to a few units
# in the last place of t (Sleef's is 1 ulp), and a's roundings move t by at most sech^2(a) |a| u <= u: we
# allow the t that torch uses an error of 4u. That error reaches the output through d gelu / dt = 0.5 x
# and the gradient through d gelu' / dt = 0.5 - x t a'(x), which grows with |x| (17 at x = -5: this is
# why nn.GELU's gradient is exactly 0 in float32 at x = -5.06, where the true value is -2.3e-6). So the
# bound of each entry is u (8 (1 + |value|) + 4 |d/dt|), times |dout| for the gradient.
def gelu_bounds(x, dout, u):
    """-> (bound on gelu(x)'s error, bound on dout * gelu'(x)'s error), entry by entry, in float64."""
    k = math.sqrt(2 / math.pi)
    t = np.tanh(k * (x + 0.044715 * x ** 3))
    da = k * (1 + 3 * 0.044715 * x ** 2)
    value = 0.5 * x * (1 + t)
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * da
    return (u * (8 * (1 + np.abs(value)) + 4 * np.abs(0.5 * x)),
            u * np.abs(dout) * (8 * (1 + np.abs(slope)) + 4 * np.abs(0.5 - x * t * da)))


@pytest.mark.parametrize("dtype, u", [(torch.float64, 2.0 ** -53), (torch.float32, 2.0 ** -24)])
def test_torch_gelu_is_numpy_gpts_tanh_gelu(dtype, u):
    """nn.GELU(approximate="tanh"), torch_gpt's GELU, against the textbook tanh formula in float64
    (numpy_gpt's gelu_forward and gelu_backward, NumPy's accurate tanh), values and gradients, so the
    two backends compute one function. (nn.GELU's vectorized tanh saturates early: its
    gradient at x = -7.17 is exactly 0 in float64, and at -5.06 in float32, where the true value is
    -8e-15 and -2.3e-6.)"""
    x = torch.randn(4000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 4
    x[:3] = torch.tensor([0.0, -30.0, 30.0])                    # the centre and both tails
    x, dout = x.to(dtype), torch.randn_like(x).to(dtype)        # the inputs torch sees, exactly
    x64, dout64 = x.double().numpy(), dout.double().numpy()
    ref, cache = gelu_forward(x64)                              # float64 on the same inputs
    dref = gelu_backward(dout64, cache)

    xb = x.clone().requires_grad_()
    builtin = torch.nn.GELU(approximate="tanh")(xb)
    dbuiltin, = torch.autograd.grad(builtin, xb, dout)
    bound, dbound = gelu_bounds(x64, dout64, u)
    assert np.all(np.abs(builtin.detach().double().numpy() - ref) <= bound)
    assert np.all(np.abs(dbuiltin.double().numpy() - dref) <= dbound)


needs_onednn = pytest.mark.skipif(not torch_gpt.kernels.ONEDNN_LINEAR,
                                  reason="this torch or CPU has no oneDNN matmul")


@needs_onednn
@pytest.mark.parametrize("shape, n_in, n_out, bias", [((7, 5), 5, 3, True), ((3, 16, 48), 48, 130, True),
                                                      ((2, 9, 64), 64, 11, False)])
def test_onednn_linear_is_f_linear(shape, n_in, n_out, bias):
    """OneDNNLinear's output and its three gradients against float64 F.linear autograd, within the
    float32 rounding bound of a K-term dot product: |error| <= K u sum_k |a_k b_k| (u = 2^-24; Higham,
    Accuracy and Stability of Numerical Algorithms, 3.1). A wrong transpose or term misses by O(1).
    The input is a strided view (as q, k, v are), and float32 F.linear meets the same bound."""
    g = torch.Generator().manual_seed(n_out)
    x = torch.randn(*shape[:-1], 2 * shape[-1], generator=g)[..., ::2]       # (..., n_in), not contiguous
    w = torch.randn(n_out, n_in, generator=g)
    b = torch.randn(n_out, generator=g) if bias else None
    dy = torch.randn(*shape[:-1], n_out, generator=g)
    ref_inputs = [t.double().requires_grad_() for t in (x, w)] + [b.double().requires_grad_() if bias else None]
    ref = torch.nn.functional.linear(*ref_inputs)
    ref_grads = torch.autograd.grad(ref, [t for t in ref_inputs if t is not None], dy.double())
    # the bound of each entry: K u times the same sum with every term in absolute value (K terms: the
    # products, and the bias where there is one)
    u = 2.0 ** -24
    N = x.numel() // n_in
    bounds = [(n_in + bias) * u * (x.abs() @ w.abs().T + (b.abs() if bias else 0)),  # y   (..., out)
              n_out * u * (dy.abs() @ w.abs()),                                      # dx  (..., in)
              N * u * (dy.reshape(N, -1).abs().T @ x.reshape(N, -1).abs()),          # dw  (out, in)
              N * u * dy.reshape(N, -1).abs().sum(0)]                                # db  (out,)
    for f in (OneDNNLinear.apply, torch.nn.functional.linear):
        inputs = [t.clone().requires_grad_() for t in (x, w)] + [b.clone().requires_grad_() if bias else None]
        out = f(*inputs)
        grads = torch.autograd.grad(out, [t for t in inputs if t is not None], dy)
        for got, want, bound in zip((out,) + grads, (ref,) + ref_grads, bounds):
            assert got.shape == want.shape and got.dtype == torch.float32
            assert ((got.double() - want).abs() <= bound.double() + 1e-30).all(), f


def test_linear_takes_onednn_for_large_float32_inputs_only():
    """Linear runs OneDNNLinear on float32 inputs of ONEDNN_MIN_ROWS rows or more, and F.linear for
    fewer rows (sampling's one-position steps) and for float64 (parity)."""
    layer = Linear(8, 4)
    rows = torch_gpt.kernels.ONEDNN_MIN_ROWS

    def backward_of(x):
        return type(layer(x.requires_grad_()).grad_fn).__name__

    assert (backward_of(torch.randn(2, rows // 2, 8)) == "OneDNNLinearBackward") == torch_gpt.kernels.onednn_usable()
    assert backward_of(torch.randn(2, rows // 2 - 1, 8)) != "OneDNNLinearBackward"
    layer.double()
    assert backward_of(torch.randn(2, rows, 8, dtype=torch.float64)) != "OneDNNLinearBackward"


def small_linear_problem(n_in, n_out, bias=True, seed=0):
    """x (2, 40, n_in), W (n_out, n_in), b (n_out,) or None, dy (2, 40, n_out): random, float32."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 40, n_in, generator=g)
    w = torch.randn(n_out, n_in, generator=g)
    b = torch.randn(n_out, generator=g) if bias else None
    return x, w, b, torch.randn(2, 40, n_out, generator=g)


@needs_onednn
def test_onednn_linear_refuses_double_backward():
    """OneDNNLinear's backward is not itself differentiable (mkldnn's op has no autograd formula): a
    second derivative through it raises, torch's once_differentiable error where the backward reaches
    its node. Unguarded, torch only warned, and d(|dx|^2)/dW came out as zeros, where F.linear's is not."""
    x, w, b, _ = small_linear_problem(5, 3)
    for f in (OneDNNLinear.apply, F.linear):
        inputs = [t.requires_grad_() for t in (x, w, b)]
        dx, = torch.autograd.grad(f(*inputs).pow(2).sum(), inputs[0], create_graph=True)   # 2 y W
        if f is F.linear:
            dw, = torch.autograd.grad(dx.pow(2).sum(), inputs[1])
            assert dw.abs().max() > 1                                   # the true second derivative
        else:
            with pytest.raises(RuntimeError):                           # "... not used in the graph"
                torch.autograd.grad(dx.pow(2).sum(), inputs[1])
            with pytest.raises(RuntimeError, match="differentiate twice a function that was marked with "
                                                   "@once_differentiable"):
                dx.pow(2).sum().backward()


@pytest.fixture
def count_onednn_calls(monkeypatch):
    """The list of argument tuples of every mkldnn._linear_pointwise call from here on."""
    real, calls = torch.ops.mkldnn._linear_pointwise, []

    def counted(*args):
        calls.append(args)
        return real(*args)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", counted)
    return calls


@needs_onednn
@pytest.mark.parametrize("frozen", ["x", "weight"])
def test_onednn_linear_computes_needed_gradients_only(frozen, count_onednn_calls):
    """With x not requiring grad (a first layer's input), OneDNNLinear's backward makes no dx call and
    returns None for it; with W and b frozen, no dW call and None for both. The gradients it does
    compute are bit for bit those of the backward that computes all three."""
    x, w, b, dy = small_linear_problem(24, 40)
    full = OneDNNLinear.apply(x.requires_grad_(), w.requires_grad_(), b.requires_grad_())
    full_grads = full.grad_fn.apply(dy)                               # (dx, dW, db), the backward itself
    x.requires_grad_(frozen != "x")
    w.requires_grad_(frozen != "weight")
    b.requires_grad_(frozen != "weight")
    out = OneDNNLinear.apply(x, w, b)
    count_onednn_calls.clear()
    grads = out.grad_fn.apply(dy)
    assert len(count_onednn_calls) == 1                               # dW, or dx
    for needed, got, want in zip((frozen != "x", frozen != "weight", frozen != "weight"), grads, full_grads):
        assert (got is None) if not needed else torch.equal(got, want)


@pytest.fixture
def fresh_decision(monkeypatch):
    """Linear's decision whether to use oneDNN (onednn_usable, made once a process) is made again at the
    test's first Linear call, under the test's monkeypatches and without TINY_LLM_ONEDNN unless the test
    sets it, and again after the test."""
    monkeypatch.delenv("TINY_LLM_ONEDNN", raising=False)
    torch_gpt.kernels.onednn_usable.cache_clear()
    yield
    torch_gpt.kernels.onednn_usable.cache_clear()


def run_linear(layer, x):
    """layer(x) twice (a first call, then one that reuses its decision), the second with its backward
    -> (out, grads of x, W and b, the name of out's backward node)."""
    layer(x.requires_grad_())
    out = layer(x)
    grads = torch.autograd.grad(out, [x, layer.weight, layer.bias], torch.ones_like(out))
    return out, grads, type(out.grad_fn).__name__


@needs_onednn
def test_onednn_self_check_passes_here(fresh_decision, capsys):
    """On this machine, oneDNN's linear passes its self-check, also when the first Linear call comes in
    inference mode (evaluation at step 0), and Linear then runs on it without a word."""
    assert torch_gpt.kernels.onednn_self_check() is None
    layer = Linear(8, 4)
    x = torch.randn(2, torch_gpt.kernels.ONEDNN_MIN_ROWS, 8)
    with torch.inference_mode():
        layer(x)
    assert run_linear(layer, x)[2] == "OneDNNLinearBackward"
    assert capsys.readouterr().err == ""


def perturbed_op(when):
    """The real mkldnn._linear_pointwise, but its result 0.1% too large on the calls where when(x, w)."""
    real = getattr(torch.ops.mkldnn, "_linear_pointwise", None)          # None where needs_onednn skips
    return lambda x, w, *rest: real(x, w, *rest) * (1.001 if when(x, w) else 1)


def raising_op(*args):
    raise RuntimeError("mkldnn: no kernel\nfor this shape")


# each way the private op can fail: what stands in for it (None: no op at all), and what the one line
# on stderr says. The backward's calls: dx = dy W takes W^T, a strided view, as its weight; dW takes
# x^T or dy^T, strided too, as its input.
SELF_CHECK_FAILURES = {
    "missing": (None, "(AttributeError: "),
    "raising": (raising_op, "(RuntimeError: mkldnn: no kernel); "),
    "new signature": (lambda x, w, b, attr: x @ w.T, "(TypeError: "),
    "wrong output": (perturbed_op(lambda x, w: w.is_contiguous()), "(its output y is off by"),
    "wrong dx": (perturbed_op(lambda x, w: x.is_contiguous() and not w.is_contiguous()),
                 "(its gradient dx is off by"),
    "wrong dW": (perturbed_op(lambda x, w: not x.is_contiguous()), "(its gradient dW is off by"),
}


@needs_onednn
@pytest.mark.parametrize("failure", list(SELF_CHECK_FAILURES))
def test_linear_falls_back_to_f_linear_when_onednn_fails_its_self_check(failure, fresh_decision, monkeypatch,
                                                                          capsys):
    """If mkldnn's private op is gone, raises, has a new signature or computes a wrong output or
    gradient, Linear says so in one line on stderr, once, and runs F.linear: the same output and
    gradients, bit for bit, as F.linear's."""
    op, reason = SELF_CHECK_FAILURES[failure]
    if op is None:                          # torch.ops.mkldnn._linear_pointwise raises AttributeError
        monkeypatch.setattr(torch.ops, "mkldnn", types.SimpleNamespace())
    else:
        monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", op)
    layer = Linear(8, 4)
    x = torch.randn(2, torch_gpt.kernels.ONEDNN_MIN_ROWS, 8)
    out, grads, backward = run_linear(layer, x)
    x_ref = x.detach().clone().requires_grad_()
    ref = F.linear(x_ref, layer.weight, layer.bias)
    ref_grads = torch.autograd.grad(ref, [x_ref, layer.weight, layer.bias], torch.ones_like(ref))
    assert backward != "OneDNNLinearBackward"
    assert torch.equal(out, ref) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    run_linear(layer, x)
    err = capsys.readouterr().err
    assert err.startswith("torch_gpt: oneDNN linear failed its self-check (") and err.count("\n") == 1, err
    assert reason in err and err.endswith("; using F.linear\n"), err


@needs_onednn
@pytest.mark.parametrize("setting, onednn", [("0", False), ("1", True), ("", True)])
def test_tiny_llm_onednn_0_turns_onednn_off(setting, onednn, fresh_decision, monkeypatch, count_onednn_calls,
                                            capsys):
    """TINY_LLM_ONEDNN=0 in the environment: Linear runs F.linear, never calls oneDNN (no self-check
    either) and prints nothing. Any other value leaves oneDNN on."""
    monkeypatch.setenv("TINY_LLM_ONEDNN", setting)
    backward = run_linear(Linear(8, 4), torch.randn(2, torch_gpt.kernels.ONEDNN_MIN_ROWS, 8))[2]
    assert (backward == "OneDNNLinearBackward") == onednn
    assert bool(count_onednn_calls) == onednn
    assert capsys.readouterr().err == ""


def test_dropout_drops_what_numpy_gpt_drops():
    """One float64 training forward and backward with dropout: given the same seeded rng, torch_gpt
    (masks from numpy_gpt.model.dropout_masks) and numpy_gpt (masks drawn inside gpt_forward) give the
    same loss and gradients, within parity's float64 bars, so the masks are the same ones, applied at the
    same places."""
    params = init_params(CONFIG, seed=2, dtype=np.float64)
    x, y = batch(CONFIG, B=4)
    p = 0.3
    np_logits, np_loss, cache = gpt_forward(params, CONFIG, x.numpy(), y.numpy(), p, np.random.default_rng(5))
    np_grads = gpt_backward(params, CONFIG, cache)

    model = GPT(CONFIG, dtype=torch.float64)
    model.load_numpy(params)
    masks = [torch.from_numpy(m) for m in dropout_masks(CONFIG, 4, CONFIG.block_size, p, np.random.default_rng(5),
                                                          np.float64)]
    assert all(0.2 < (m == 0).double().mean() < 0.4 for m in masks)
    _, loss = model(x, y, masks=masks)
    loss.backward()
    assert abs(loss.item() - np_loss) <= loss_tolerance(np_loss, np.abs(np_logits).max())
    _, no_dropout = model(x, y)
    assert abs(no_dropout.item() - np_loss) > 1e-3            # the masks did something
    for name, t in model.named_parameters():
        bar = TOLERANCE["float64"] * np.abs(np_grads[name]).max()
        assert np.abs(t.grad.numpy() - np_grads[name]).max() <= bar, name
