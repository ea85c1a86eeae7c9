"""The GPT's layers as forward/backward pairs of plain functions, in the order the model runs them.

Shape key: B batch, T time, C channels, H heads, D head size (C // H), V vocab, N = B*T.

    x_forward(inputs, params)  -> (out, cache)     cache: what the backward needs, and nothing more
    x_backward(dout, cache)    -> gradients of the forward's inputs and params, in the same order

Every backward quotes the forward line it differentiates and names its terms. A gradient is called
d<name of the forward tensor>. No forward or backward changes its inputs or dout in place.
"""
import math

import numpy as np

# ------------------------------------------------------------------------------------------------
# token and position embeddings


def embedding_forward(idx, wte, wpe):
    """idx (B, T) ints, wte (V, C), wpe (block_size, C) -> x (B, T, C).

    Saves idx and the table shapes; the tables themselves are not needed for the backward.
    """
    T = idx.shape[1]
    x = wte[idx] + wpe[:T]              # (B, T, C) + (T, C)
    return x, (idx, wte.shape, wpe.shape)


def embedding_backward(dx, cache):
    """dx (B, T, C) -> dwte (V, C), dwpe (block_size, C)."""
    idx, wte_shape, wpe_shape = cache
    T = idx.shape[1]
    # forward: x[b, t] = wte[idx[b, t]] + wpe[t]
    # term 1: every position adds its gradient to the row of its token (rows repeat, so accumulate)
    dwte = np.zeros(wte_shape, dtype=dx.dtype)
    np.add.at(dwte, idx, dx)            # (V, C)
    # term 2: position t's row receives the gradient of every sequence in the batch at t
    dwpe = np.zeros(wpe_shape, dtype=dx.dtype)
    dwpe[:T] = dx.sum(axis=0)           # (T, C)
    return dwte, dwpe


# ------------------------------------------------------------------------------------------------
# LayerNorm over the channels


def layernorm_forward(x, w, b, eps=1e-5):
    """x (..., C), w (C,), b (C,) -> out (..., C).

    Saves xhat (the normalized input), rstd (1 / standard deviation) and w.
    """
    C = x.shape[-1]
    mean = x.sum(axis=-1, keepdims=True) / C             # (..., 1) (x.mean, without its Python-level overhead)
    xc = x - mean                                        # (..., C)
    var = (xc * xc).sum(axis=-1, keepdims=True) / C      # (..., 1) biased variance, as torch
    rstd = 1.0 / np.sqrt(var + eps)                      # (..., 1)
    xhat = xc * rstd                                     # (..., C)
    out = xhat * w + b                                   # (..., C)
    return out, (xhat, rstd, w)


def layernorm_backward(dout, cache):
    """dout (..., C) -> dx (..., C), dw (C,), db (C,)."""
    xhat, rstd, w = cache
    C = xhat.shape[-1]
    # forward: out = xhat * w + b
    lead = tuple(range(dout.ndim - 1))
    dw = (dout * xhat).sum(axis=lead)                    # (C,)
    db = dout.sum(axis=lead)                             # (C,)
    dxhat = dout * w                                     # (..., C)
    # forward: xhat = (x - mean) * rstd, where mean and rstd both depend on x.
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    #      term 1: dxhat           x's direct path
    #      term 2: mean(dxhat)     through the mean
    #      term 3: xhat * mean(..) through the variance
    term2 = dxhat.sum(axis=-1, keepdims=True) / C                # (..., 1)
    term3 = xhat * ((dxhat * xhat).sum(axis=-1, keepdims=True) / C)   # (..., C)
    dx = rstd * (dxhat - term2 - term3)                          # (..., C)
    return dx, dw, db


# ------------------------------------------------------------------------------------------------
# Linear: out = x @ w.T + b, with w stored (out_features, in_features) as torch stores it


def linear_forward(x, w, b=None):
    """x (..., Cin), w (Cout, Cin), b (Cout,) or None -> out (..., Cout).

    Saves x and w. The leading dimensions are flattened so BLAS sees one (N, Cin) @ (Cin, Cout) product.
    """
    x2 = x.reshape(-1, x.shape[-1])                      # (N, Cin)
    out = x2 @ w.T                                       # (N, Cout)
    if b is not None:
        out += b
    return out.reshape(*x.shape[:-1], w.shape[0]), (x, w, b is not None)


def linear_backward(dout, cache):
    """dout (..., Cout) -> dx (..., Cin), dw (Cout, Cin), db (Cout,) or None."""
    x, w, has_bias = cache
    dout2 = dout.reshape(-1, w.shape[0])                 # (N, Cout)
    # forward: out = x @ w.T + b
    dx = (dout2 @ w).reshape(x.shape)                    # (N, Cin) -> (..., Cin)
    dw = dout2.T @ x.reshape(-1, w.shape[1])             # (Cout, Cin)
    db = dout2.sum(axis=0) if has_bias else None         # (Cout,)
    return dx, dw, db


# ------------------------------------------------------------------------------------------------
# causal multi-head self-attention (the part between c_attn and c_proj)


def softmax(x):
    """Softmax over the last axis, shifted by the max so exp never overflows. -inf entries become 0."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(datt, att):
    """datt, att (..., T) -> dscores (...,T), for att = softmax(scores).

    For one row, dscores_j = att_j * (datt_j - sum_i att_i * datt_i)
        term 1: att * datt               the row's own entry
        term 2: att * sum(att * datt)    through the normalizing sum
    """
    return att * (datt - (att * datt).sum(axis=-1, keepdims=True))


def causal_mask(T, dtype):
    """(T, T) additive mask: 0 where key position <= query position, -inf in the future."""
    return np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)


def split_heads(x, n_head):
    """(B, T, C) -> (B, H, T, D)"""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, T, D) -> (B, T, C)"""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def attention_forward(qkv, n_head):
    """qkv (B, T, 3C), the output of c_attn -> y (B, T, C), the heads' outputs side by side.

    Saves q, k, v (B, H, T, D) and the attention probabilities att (B, H, T, T).
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    scale = 1.0 / math.sqrt(C // n_head)
    q, k, v = (split_heads(qkv[..., i * C:(i + 1) * C], n_head) for i in range(3))   # (B, H, T, D)
    scores = (q * scale) @ k.transpose(0, 1, 3, 2)        # (B, H, T, T) = q @ k^T * scale
    scores += causal_mask(T, qkv.dtype)                   # future positions get -inf
    att = softmax(scores)                                 # (B, H, T, T), rows sum to 1
    y = att @ v                                           # (B, H, T, D)
    return merge_heads(y), (q, k, v, att, scale)


def attention_backward(dy, cache):
    """dy (B, T, C) -> dqkv (B, T, 3C)."""
    q, k, v, att, scale = cache
    dy = split_heads(dy, q.shape[1])                      # (B, H, T, D), a view: dout is not modified
    # forward: y = att @ v
    datt = dy @ v.transpose(0, 1, 3, 2)                   # (B, H, T, T)
    dv = att.transpose(0, 1, 3, 2) @ dy                   # (B, H, T, D)
    # forward: att = softmax(scores). Masked entries have att = 0, so their gradient is 0: the mask
    # needs no backward of its own.
    dscores = softmax_backward(datt, att)                 # (B, H, T, T)
    # forward: scores = q @ k^T * scale
    dq = dscores @ (k * scale)                            # (B, H, T, D)
    dk = dscores.transpose(0, 1, 3, 2) @ (q * scale)      # (B, H, T, D)
    return np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)   # (B, T, 3C)


# ------------------------------------------------------------------------------------------------
# GELU, tanh approximation (GPT-2; torch.nn.GELU(approximate="tanh"))

GELU_K = math.sqrt(2.0 / math.pi)   # a Python float: a NumPy float64 scalar would upcast float32 arrays


def gelu_forward(x):
    """x (...) -> out (...). Saves x and tanh(u), so the backward needs no second tanh."""
    # out = 0.5 * x * (1 + tanh(u)),  u = sqrt(2/pi) * (x + 0.044715 * x^3)
    u = GELU_K * (x + 0.044715 * (x * x * x))
    th = np.tanh(u)
    out = 0.5 * x * (1.0 + th)
    return out, (x, th)


def gelu_backward(dout, cache):
    """dout (...) -> dx (...)."""
    x, th = cache
    # forward: out = 0.5 * x * (1 + tanh(u))
    #   term 1: 0.5 * (1 + tanh(u))                         from the factor x
    #   term 2: 0.5 * x * (1 - tanh(u)^2) * du/dx           through tanh,
    #           du/dx = sqrt(2/pi) * (1 + 3 * 0.044715 * x^2)
    term1 = 0.5 * (1.0 + th)
    term2 = 0.5 * x * (1.0 - th * th) * (GELU_K * (1.0 + 3 * 0.044715 * (x * x)))
    return dout * (term1 + term2)


# ------------------------------------------------------------------------------------------------
# dropout, in training only: zero each entry with probability p and scale the others by 1 / (1 - p),
# so the expected output is the input (Srivastava et al. 2014). The model applies it to each residual
# branch, just before the branch is added back to the stream.


def dropout_mask(shape, p, rng, dtype=np.float32):
    """The scaled mask: 0 with probability p, else 1 / (1 - p). torch_gpt draws its masks here too, on a
    CPU and in float64 (a GPU in float32 draws its own)."""
    return (rng.random(shape, dtype=np.float32) >= p).astype(dtype) / (1.0 - p)


def dropout_forward(x, mask):
    """x (...), mask (...) from dropout_mask (0 or 1/(1-p)), or None for no dropout -> out (...).
    Saves the mask."""
    if mask is None:
        return x, None
    return x * mask, mask


def dropout_backward(dout, cache):
    """dout (...) -> dx (...)."""
    mask = cache
    # forward: out = x * mask
    return dout if mask is None else dout * mask


# ------------------------------------------------------------------------------------------------
# residual connection: out = x + f(x). The gradient copies to both paths; the model adds the two
# paths back together with a visible `+`.


def residual_forward(x, fx):
    """x (B, T, C), fx (B, T, C) -> out (B, T, C). Saves nothing."""
    return x + fx, None


def residual_backward(dout, cache):
    """dout (B, T, C) -> dx, dfx: the same gradient reaches the skip path and the branch."""
    return dout, dout


# ------------------------------------------------------------------------------------------------
# softmax cross-entropy, the loss: mean over the B*T positions of -log p(target)


def cross_entropy_forward(logits, targets):
    """logits (B, T, V), targets (B, T) ints -> loss (scalar).

    Saves the probabilities and the targets.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)                 # (B, T, V)
    logsumexp = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))       # (B, T, 1)
    logprobs = shifted - logsumexp                                        # (B, T, V)
    picked = np.take_along_axis(logprobs, targets[..., None], axis=-1)    # (B, T, 1)
    loss = -picked.mean()
    return loss, (np.exp(logprobs), targets)


def cross_entropy_backward(dloss, cache):
    """dloss (scalar, 1.0 for the loss itself) -> dlogits (B, T, V)."""
    probs, targets = cache
    N = targets.size                                                      # B * T positions
    # forward: loss = -(1/N) sum_n logprobs[n, y_n],   logprobs[n, j] = logits[n, j] - log sum_i exp(logits[n, i])
    #   d loss / d logprobs[n, j]       = -1/N where j = y_n, else 0      (the mean of the picked entries)
    #   d logprobs[n, y] / d logits[n, j] = [j = y] - probs[n, j]          (d/dlogit_j of log sum exp = probs_j)
    # chain rule, one picked entry per position:
    #   dlogits[n, j] = -(1/N) ([j = y_n] - probs[n, j]) = (probs[n, j] - onehot[n, j]) / N
    onehot = np.zeros_like(probs)                                         # (B, T, V)
    np.put_along_axis(onehot, targets[..., None], 1.0, axis=-1)           # 1 at each target, else 0
    return (probs - onehot) * (float(dloss) / N)                          # (B, T, V)
