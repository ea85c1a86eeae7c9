"""torch_gpt's model: the fast path (scaled_dot_product_attention) equals the explicit path that parity
reads, the sigmoid-form GELU is nn.GELU(approximate="tanh"), the oneDNN Linear is F.linear, and dropout
drops the entries numpy_gpt drops."""
import numpy as np
import pytest
import torch

from numpy_gpt import GPTConfig, gpt_backward, gpt_forward, init_params
from numpy_gpt.layers import gelu_backward_textbook, gelu_forward_textbook
from numpy_gpt.model import dropout_masks
import torch_gpt.model
from torch_gpt.model import GPT, Linear, OneDNNLinear, TanhGELU

CONFIG = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=4, n_embd=16)


def batch(config, B=3, T=None, seed=0):
    rng = np.random.default_rng(seed)
    T = T or config.block_size
    return (torch.from_numpy(rng.integers(0, config.vocab_size, (B, T))),
            torch.from_numpy(rng.integers(0, config.vocab_size, (B, T))))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("T", [1, 7, 16])
def test_fast_path_equals_explicit_path(dtype, tol, T):
    model = GPT(CONFIG, seed=1, dtype=dtype)
    x, y = batch(CONFIG, T=T)
    fast_logits, fast_loss = model(x, y)
    fast_grads = torch.autograd.grad(fast_loss, list(model.parameters()))
    acts = {}
    slow_logits, slow_loss = model(x, y, acts=acts)
    slow_grads = torch.autograd.grad(slow_loss, list(model.parameters()))
    assert "h.1.attn.att" in acts and acts["h.1.attn.att"].shape == (3, 4, T, T)
    scale = fast_logits.abs().max()
    assert (fast_logits - slow_logits).abs().max() <= tol * scale
    assert abs(fast_loss.item() - slow_loss.item()) <= tol * abs(slow_loss.item())
    for (name, _), a, b in zip(model.named_parameters(), fast_grads, slow_grads):
        assert (a - b).abs().max() <= tol * b.abs().max(), name


# tolerances: a few units in the last place of dout * gelu'(x), with |dout| up to 4: we measure 7e-15 and
# 1.3e-6 for TanhGELU, 1.0e-14 and 2.2e-6 for the built-in
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 3e-14), (torch.float32, 5e-6)])
def test_sigmoid_gelu_is_the_tanh_gelu(dtype, tol):
    """TanhGELU against the textbook tanh formula in float64 (numpy_gpt's gelu_*_textbook, NumPy's
    accurate tanh), values and gradients; and nn.GELU(approximate="tanh") against the same reference,
    so the two torch forms compute one function. (nn.GELU's vectorized tanh saturates early: its
    gradient at x = -7.17 is exactly 0 in float64, and at -5.06 in float32, where the true value is
    -8e-15 and -2.3e-6.)"""
    x = torch.randn(4000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 4
    x[:3] = torch.tensor([0.0, -30.0, 30.0])                    # the centre and both tails
    dout = torch.randn_like(x)
    ref, cache = gelu_forward_textbook(x.numpy())
    dref = torch.from_numpy(gelu_backward_textbook(dout.numpy(), cache))
    ref = torch.from_numpy(ref)

    def close(a, b, tol):
        return bool(((a.double() - b).abs() <= tol * (1 + b.abs())).all())

    xt = x.to(dtype).requires_grad_()
    out = TanhGELU.apply(xt)
    dx, = torch.autograd.grad(out, xt, dout.to(dtype))
    assert close(out, ref, tol) and close(dx, dref, tol)
    xb = x.to(dtype).requires_grad_()
    builtin = torch.nn.GELU(approximate="tanh")(xb)
    dbuiltin, = torch.autograd.grad(builtin, xb, dout.to(dtype))
    assert close(builtin, ref, tol) and close(dbuiltin, dref, tol)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(TanhGELU.apply, (x[:50].clone().requires_grad_(),))


@pytest.mark.skipif(not torch_gpt.model.ONEDNN_LINEAR, reason="this torch or CPU has no oneDNN matmul")
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
    rows = torch_gpt.model.ONEDNN_MIN_ROWS

    def backward_of(x):
        return type(layer(x.requires_grad_()).grad_fn).__name__

    assert (backward_of(torch.randn(2, rows // 2, 8)) == "OneDNNLinearBackward") == torch_gpt.model.ONEDNN_LINEAR
    assert backward_of(torch.randn(2, rows // 2 - 1, 8)) != "OneDNNLinearBackward"
    layer.double()
    assert backward_of(torch.randn(2, rows, 8, dtype=torch.float64)) != "OneDNNLinearBackward"


def test_dropout_drops_what_numpy_gpt_drops():
    """One float64 training forward and backward with dropout: given the same seeded rng, torch_gpt
    (masks from numpy_gpt.model.dropout_masks) and numpy_gpt (masks drawn inside gpt_forward) give the
    same loss and gradients, so the masks are the same ones, applied at the same places."""
    params = init_params(CONFIG, seed=2, dtype=np.float64)
    x, y = batch(CONFIG, B=4)
    p = 0.3
    _, np_loss, _, cache = gpt_forward(params, CONFIG, x.numpy(), y.numpy(), p, np.random.default_rng(5))
    np_grads = gpt_backward(params, CONFIG, cache)

    model = GPT(CONFIG, dtype=torch.float64)
    model.load_numpy(params)
    masks = [torch.from_numpy(m) for m in dropout_masks(CONFIG, 4, CONFIG.block_size, p, np.random.default_rng(5),
                                                          np.float64)]
    assert all(0.2 < (m == 0).double().mean() < 0.4 for m in masks)
    _, loss = model(x, y, masks=masks)
    loss.backward()
    assert abs(loss.item() - np_loss) <= 1e-12 * np_loss
    _, no_dropout = model(x, y)
    assert abs(no_dropout.item() - np_loss) > 1e-3            # the masks did something
    for name, t in model.named_parameters():
        assert np.abs(t.grad.numpy() - np_grads[name]).max() <= 1e-12 * np.abs(np_grads[name]).max(), name
