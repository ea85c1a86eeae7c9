"""Every layer's backward against centered finite differences, in float64.

Each check differentiates f = sum(out * G) with G a random upstream gradient (never all ones: that
hides wrong gradients), with random non-trivial weights, at shapes hypothesis draws.
"""
import numpy as np
from hypothesis import example, given, settings, strategies as st

from numpy_gpt.layers import (attention_backward, attention_forward, cross_entropy_backward, cross_entropy_forward,
                              embedding_backward, embedding_forward, gelu_backward, gelu_forward, layernorm_backward,
                              layernorm_forward, linear_backward, linear_forward, residual_backward, residual_forward,
                              softmax, softmax_backward)

from conftest import assert_grad_close, numeric_grad

FD = settings(max_examples=15, deadline=None)


@st.composite
def shapes(draw):
    """B, T, C, H, V: n_head divides C; sizes kept small so finite differences stay quick."""
    H = draw(st.integers(1, 3))
    D = draw(st.integers(1, 4))
    return dict(B=draw(st.integers(1, 3)), T=draw(st.integers(1, 6)), C=H * D, H=H, V=draw(st.integers(2, 9)),
                seed=draw(st.integers(0, 2**32 - 1)))


def check(forward, backward, inputs, names, rng):
    """Compare backward's gradients of sum(out * G) with finite differences, for every input."""
    out, cache = forward(*inputs)
    G = rng.standard_normal(np.shape(out))
    grads = backward(G, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for x, dx, name in zip(inputs, grads, names):
        if name is None:
            continue
        numeric = numeric_grad(lambda: np.sum(forward(*inputs)[0] * G), x)
        assert_grad_close(dx, numeric, name)


@FD
@given(shapes())
def test_embedding(s):
    rng = np.random.default_rng(s["seed"])
    idx = rng.integers(0, s["V"], size=(s["B"], s["T"]))     # repeated tokens test the accumulation
    wte, wpe = rng.standard_normal((s["V"], s["C"])), rng.standard_normal((s["T"] + 2, s["C"]))
    out, cache = embedding_forward(idx, wte, wpe)
    G = rng.standard_normal(out.shape)
    dwte, dwpe = embedding_backward(G, cache)
    assert_grad_close(dwte, numeric_grad(lambda: np.sum(embedding_forward(idx, wte, wpe)[0] * G), wte), "dwte")
    assert_grad_close(dwpe, numeric_grad(lambda: np.sum(embedding_forward(idx, wte, wpe)[0] * G), wpe), "dwpe")
    assert not dwpe[s["T"]:].any(), "positions past T get no gradient"


@FD
@given(shapes())
@example({"B": 1, "T": 2, "C": 1, "H": 1, "V": 2, "seed": 92})    # a row whose two channels differ by 1e-3
def test_layernorm(s):
    rng = np.random.default_rng(s["seed"])
    C = max(s["C"], 2)
    x = rng.standard_normal((s["B"], s["T"], C)) * 3 + 1
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    check(layernorm_forward, layernorm_backward, (x, w, b), ("dx", "dw", "db"), rng)


@FD
@given(shapes(), st.booleans())
def test_linear(s, bias):
    rng = np.random.default_rng(s["seed"])
    x = rng.standard_normal((s["B"], s["T"], s["C"]))
    w = rng.standard_normal((s["V"], s["C"]))
    if bias:
        check(linear_forward, linear_backward, (x, w, rng.standard_normal(s["V"])), ("dx", "dw", "db"), rng)
    else:
        out, cache = linear_forward(x, w)
        G = rng.standard_normal(out.shape)
        dx, dw, db = linear_backward(G, cache)
        assert db is None
        assert_grad_close(dx, numeric_grad(lambda: np.sum(linear_forward(x, w)[0] * G), x), "dx")
        assert_grad_close(dw, numeric_grad(lambda: np.sum(linear_forward(x, w)[0] * G), w), "dw")


@FD
@given(shapes())
def test_attention(s):
    rng = np.random.default_rng(s["seed"])
    qkv = rng.standard_normal((s["B"], s["T"], 3 * s["C"])) * 2   # scores far from uniform
    check(lambda q: attention_forward(q, s["H"]), attention_backward, (qkv,), ("dqkv",), rng)


def test_attention_is_causal():
    """Changing a later position's input never changes an earlier position's output."""
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((2, 7, 12))
    y, (_, _, _, att, _) = attention_forward(qkv, 2)
    qkv2 = qkv.copy()
    qkv2[:, 4:] += rng.standard_normal((2, 3, 12))
    y2, _ = attention_forward(qkv2, 2)
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])
    assert np.all(np.triu(att[0, 0], k=1) == 0) and np.allclose(att.sum(-1), 1)


@FD
@given(shapes())
def test_gelu(s):
    rng = np.random.default_rng(s["seed"])
    x = rng.standard_normal((s["B"], s["T"], 4 * s["C"])) * 2
    check(gelu_forward, gelu_backward, (x,), ("dx",), rng)


def test_gelu_matches_the_tanh_formula():
    x = np.linspace(-5, 5, 101)
    expected = [0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3))) for v in x]
    np.testing.assert_allclose(gelu_forward(x)[0], expected, rtol=1e-15, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_softmax_and_its_backward_on_masked_rows(T, seed):
    """softmax on causally masked rows like attention's (masked entries exactly 0, rows summing to 1,
    inputs untouched), and softmax_backward against finite differences on a row's unmasked entries."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((2, 3, T, T)) * 4
    future = np.triu_indices(T, 1)
    scores[..., future[0], future[1]] = -np.inf
    before = scores.copy()
    att = softmax(scores)
    np.testing.assert_array_equal(scores, before)
    assert np.all(att[..., future[0], future[1]] == 0) and np.allclose(att.sum(-1), 1, rtol=0, atol=1e-15)
    datt = rng.standard_normal(scores.shape)
    t = int(rng.integers(0, T))                 # a row with t + 1 unmasked entries
    x, G = scores[0, 0, t, :t + 1].copy(), datt[0, 0, t, :t + 1]
    assert_grad_close(softmax_backward(G, softmax(x)), numeric_grad(lambda: np.sum(softmax(x) * G), x), "dx")
    np.testing.assert_array_equal(softmax_backward(datt, att)[..., future[0], future[1]], 0)


@FD
@given(shapes())
def test_residual(s):
    rng = np.random.default_rng(s["seed"])
    x, fx = rng.standard_normal((2, s["B"], s["T"], s["C"]))
    check(residual_forward, residual_backward, (x, fx), ("dx", "dfx"), rng)


@FD
@given(shapes())
def test_cross_entropy(s):
    rng = np.random.default_rng(s["seed"])
    logits = rng.standard_normal((s["B"], s["T"], s["V"])) * 3
    targets = rng.integers(0, s["V"], size=(s["B"], s["T"]))
    loss, cache = cross_entropy_forward(logits, targets)
    dlogits = cross_entropy_backward(1.0, cache)
    assert_grad_close(dlogits, numeric_grad(lambda: cross_entropy_forward(logits, targets)[0], logits), "dlogits")
    # the loss itself, from its definition
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = -np.mean(np.log(np.take_along_axis(p, targets[..., None], -1)))
    np.testing.assert_allclose(loss, expected, rtol=1e-13)


def cross_entropy_step_by_step(logits, targets):
    """The forward broken into steps that can each be differentiated, then each step's backward
    (Karpathy's makemore part 4). The fused gradient must equal what these steps compute."""
    N, V = targets.size, logits.shape[-1]
    rows = np.arange(N)
    logits, targets = logits.reshape(N, V), targets.reshape(N)
    maxes = logits.max(1, keepdims=True)
    shifted = logits - maxes
    counts = np.exp(shifted)
    sums = counts.sum(1, keepdims=True)
    sums_inv = 1.0 / sums
    probs = counts * sums_inv
    logprobs = np.log(probs)
    loss = -logprobs[rows, targets].mean()
    dlogprobs = np.zeros_like(logprobs)
    dlogprobs[rows, targets] = -1.0 / N               # loss = -mean(logprobs[targets])
    dprobs = dlogprobs / probs                        # logprobs = log(probs)
    dcounts = dprobs * sums_inv                       # probs = counts * sums_inv: through counts ...
    dsums_inv = (counts * dprobs).sum(1, keepdims=True)   # ... and through sums_inv
    dsums = -dsums_inv / sums ** 2                    # sums_inv = 1 / sums
    dcounts = dcounts + dsums                         # sums = counts.sum(1): both paths into counts
    dshifted = counts * dcounts                       # counts = exp(shifted)
    dmaxes = -dshifted.sum(1, keepdims=True)          # shifted = logits - maxes (zero in exact math)
    dlogits = dshifted + (logits == maxes) * dmaxes   # max routes its gradient to the argmax
    return loss, dlogits


@settings(max_examples=50, deadline=None)
@given(shapes())
def test_fused_cross_entropy_gradient_equals_step_by_step(s):
    rng = np.random.default_rng(s["seed"])
    logits = rng.standard_normal((s["B"], s["T"], s["V"])) * 4
    targets = rng.integers(0, s["V"], size=(s["B"], s["T"]))
    loss, cache = cross_entropy_forward(logits, targets)
    loss_steps, dlogits_steps = cross_entropy_step_by_step(logits, targets)
    # log(probs) of a probability near 1 is exact only to ~1e-16 absolute, however small the loss
    np.testing.assert_allclose(loss, loss_steps, rtol=1e-14, atol=1e-15)
    # float64 rounding through ~10 steps: 1e-13 of the gradient's scale (1/N) is ~100 ulps
    N = targets.size
    np.testing.assert_allclose(cross_entropy_backward(1.0, cache).reshape(N, -1), dlogits_steps, rtol=0, atol=1e-13 / N)


def test_backward_does_not_modify_dout():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 6))
    cases = [(layernorm_forward, layernorm_backward, (x, rng.standard_normal(6), rng.standard_normal(6))),
             (linear_forward, linear_backward, (x, rng.standard_normal((4, 6)), rng.standard_normal(4))),
             (lambda q: attention_forward(q, 2), attention_backward, (rng.standard_normal((2, 5, 18)),)),
             (gelu_forward, gelu_backward, (x,))]
    for forward, backward, inputs in cases:
        out, cache = forward(*inputs)
        dout = rng.standard_normal(out.shape)
        before = dout.copy()
        backward(dout, cache)
        np.testing.assert_array_equal(dout, before)


def test_float32_stays_float32():
    """No layer upcasts float32 to float64 (a NumPy float64 scalar constant would)."""
    rng = np.random.default_rng(2)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)   # noqa: E731
    x = f32(2, 5, 8)
    out, c = layernorm_forward(x, f32(8), f32(8))
    assert out.dtype == np.float32 and layernorm_backward(x, c)[0].dtype == np.float32
    out, c = linear_forward(x, f32(4, 8), f32(4))
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in linear_backward(out, c))
    out, c = attention_forward(f32(2, 5, 24), 2)
    assert out.dtype == np.float32 and attention_backward(out, c).dtype == np.float32
    out, c = gelu_forward(x)
    assert out.dtype == np.float32 and gelu_backward(out, c).dtype == np.float32
    loss, c = cross_entropy_forward(x, rng.integers(0, 8, (2, 5)))
    assert loss.dtype == np.float32 and cross_entropy_backward(1.0, c).dtype == np.float32


def test_dropout():
    from numpy_gpt.layers import dropout_backward, dropout_forward, dropout_mask
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 128)).astype(np.float32)
    out, mask = dropout_forward(x, None)
    assert out is x and mask is None and dropout_backward(x, mask) is x     # no mask is the identity
    out, mask = dropout_forward(x, dropout_mask(x.shape, 0.25, np.random.default_rng(1)))
    assert out.dtype == np.float32 and set(np.unique(mask)) == {0.0, np.float32(1 / 0.75)}
    assert abs((mask == 0).mean() - 0.25) < 0.01                            # 8,192 draws: 5 sd is 0.024
    np.testing.assert_array_equal(out, x * mask)
    # finite differences, with the same mask each call (the same seed)
    x64 = rng.standard_normal((3, 4, 5))
    G = rng.standard_normal((3, 4, 5))
    mask = dropout_mask(x64.shape, 0.4, np.random.default_rng(7), np.float64)
    f = lambda: np.sum(dropout_forward(x64, mask)[0] * G)                   # noqa: E731
    assert_grad_close(dropout_backward(G, mask), numeric_grad(f, x64), "dx")
