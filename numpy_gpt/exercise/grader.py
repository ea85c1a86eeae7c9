"""The grader's checks 1 to 3: does the learner's attention run with the right shapes, does its forward equal
numpy_gpt's, and does its backward equal finite differences and numpy_gpt's. Check 4, the payoff, is in
payoff.py.

Shape key: B batch, T time, C channels, H heads, D head size (C // H).

Every check works on one plain function, forward(qkv) -> y in float64 NumPy, whatever the level: a NumPy
file's attention_forward, or a PyTorch module run on weights the grader chooses (torch_forward). The
reference is numpy_gpt.layers itself, so the grader cannot drift from the model.

Where the forward differs from the reference, probes find the first property that fails, each observed
from outside through y alone:
    heads kept apart      changing one head's q, k, v changes only that head's channels of y
    no future             changing a later position's keys, values or query leaves earlier outputs alone
    rows sum to 1         with every value 1, every output is 1 (y is then the rows' sums of the weights)
    scale 1/sqrt(D)       with one-hot values, y shows the weights themselves; their log-ratios measure
                          the factor that multiplies q . k
"""
import math
import traceback

import numpy as np

from .. import layers

# The grader's inputs: small, but with D >= T so that one-hot values can show every weight (scale_probe),
# B*T <= C so that torch_forward can feed any qkv through c_attn, and sqrt(D) far from 1.
B, T, H, D = 2, 6, 3, 8
C = H * D

# A float64 attention computes each output from dot products of at most max(T, D) = 8 terms and one exp
# of scores of size ~3: its rounding error is a few times 1e-15 of y's scale, in any order of operations.
# 1e-11 leaves three orders of margin; the smallest planted mistake moves y by more than 1e-2 of its scale.
FORWARD_TOL = 1e-11
# Fourth-order centered differences with step FD_STEP: truncation ~h^4 = 1e-16, rounding ~eps * |L| / h
# ~ 1e-11 of the gradient's scale. 1e-6 leaves five orders of margin; a wrong term moves it by O(1).
FD_STEP, FD_TOL = 1e-4, 1e-6
# numpy_gpt's own backward against the learner's: the same rounding argument as the forward's.
BACKWARD_TOL = 1e-10


class CheckFailed(Exception):
    """A check failed; the message is the hint that names what is wrong."""


def say(label, verdict, detail=""):
    """One verdict line."""
    print(f"{label:<34} {verdict:<5} {detail}".rstrip(), flush=True)


def relative_error(a, b):
    """max |a - b| relative to b's largest entry (the scale of what is compared)."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def learner_call(path, what, fn, *args):
    """Call the learner's fn; an exception becomes CheckFailed naming it and the line of their file it
    came from, in one line."""
    try:
        with np.errstate(all="ignore"):     # a nan or inf it makes is check 1's to name, in one line
            return fn(*args)
    except Exception as e:       # the learner's code: anything can happen, and all of it is their hint
        raise CheckFailed(describe_exception(e, path, what)) from None


def describe_exception(e, path, what):
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
    where = f" at {path.name} line {frames[-1].lineno}: {frames[-1].line}" if frames else ""
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    hint = " (a TODO still holds None: fill it in)" if "NoneType" in message else ""
    return f"{what} raised {type(e).__name__}{': ' + message if message else ''}{where}{hint}"


# ------------------------------------------------------------------------------------------------
# the learner's attention as one function of qkv


def numpy_forward(module, path):
    """attention_forward(qkv, n_head) -> (y, cache), as forward(qkv) -> y. Checks it returns a pair and
    leaves qkv alone."""
    def forward(qkv):
        given = qkv.copy()
        out = learner_call(path, "attention_forward", module.attention_forward, given, H)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise CheckFailed(f"attention_forward must return a pair (y, cache); it returned "
                              f"{describe_value(out)}")
        if not np.array_equal(given, qkv):
            raise CheckFailed("attention_forward changed its input qkv in place; the model uses qkv again: "
                              "work on new arrays (x = x - m, not x -= m, on anything that shares qkv's memory)")
        return out[0]
    return forward


def torch_forward(cls, path):
    """A CausalSelfAttention module class -> forward(qkv) -> y, the module's attention between c_attn and
    c_proj, in float64, and the module.

    The grader picks the weights: x is B*T one-hot rows (B*T <= C), so c_attn's weight can hold any qkv
    in its first B*T columns, and c_proj is the identity. The module then returns exactly the y that
    numpy_gpt.layers.attention_forward(qkv) should. backward(qkv, dy) -> dqkv comes from autograd: the
    gradient of c_attn's weight holds dqkv in the same columns.
    """
    import torch

    from ..config import GPTConfig
    config = GPTConfig(vocab_size=1, block_size=T, n_layer=1, n_head=H, n_embd=C)
    module = learner_call(path, "CausalSelfAttention(config)", cls, config)
    if not isinstance(module, torch.nn.Module):
        raise CheckFailed(f"CausalSelfAttention must be a torch.nn.Module; it is {type(module).__name__}")
    check_torch_parameters(module)
    module = module.double()
    N = B * T
    x = torch.eye(C, dtype=torch.float64)[:N].reshape(B, T, C)          # (B, T, C) one-hot rows

    def run(qkv, dy=None):
        with torch.no_grad():
            w = torch.zeros(3 * C, C, dtype=torch.float64)
            w[:, :N] = torch.from_numpy(qkv.reshape(N, 3 * C).T)           # x @ w.T = qkv
            module.c_attn.weight.copy_(w)
            module.c_attn.bias.zero_()
            module.c_proj.weight.copy_(torch.eye(C, dtype=torch.float64))
            module.c_proj.bias.zero_()
        module.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(dy is not None):
            y = learner_call(path, "forward", module, x)
            if not isinstance(y, torch.Tensor):
                raise CheckFailed(f"forward must return one tensor (B, T, C); it returned {describe_value(y)}")
            if dy is None:
                return y.detach().numpy()
            if not y.requires_grad:
                raise CheckFailed("forward's output is cut from autograd's graph (a .detach(), .data, .numpy() or "
                                  "torch.no_grad in forward?): nothing could train through it")
            learner_call(path, "backward through forward", y.backward, torch.from_numpy(dy))
        g = module.c_attn.weight.grad
        if g is None:
            raise CheckFailed("no gradient reaches c_attn's weight: is qkv cut from the graph (.detach(), .data)?")
        return g[:, :N].T.reshape(B, T, 3 * C).numpy().copy()              # dqkv (B, T, 3C)
    return run, module


def check_torch_parameters(module):
    """The module must keep __init__'s c_attn and c_proj, and nothing else that learns: the payoff loads
    the kid's weights into it by those names."""
    import torch
    for name, shape in (("c_attn", (3 * C, C)), ("c_proj", (C, C))):
        layer = getattr(module, name, None)
        if not isinstance(layer, torch.nn.Linear) or tuple(layer.weight.shape) != shape or layer.bias is None:
            raise CheckFailed(f"CausalSelfAttention needs self.{name} = nn.Linear({shape[1]}, {shape[0]}) with a "
                              f"bias, as __init__ gives it: the kid's weights load into it by that name")
    extra = sorted(set(dict(module.named_parameters())) - {"c_attn.weight", "c_attn.bias", "c_proj.weight",
                                                           "c_proj.bias"})
    if extra:
        raise CheckFailed(f"CausalSelfAttention has parameters the kid does not have: {', '.join(extra)}; attention "
                          f"learns only through c_attn and c_proj (a mask is a constant, not a parameter)")


def describe_value(x):
    if isinstance(x, np.ndarray) or type(x).__name__ == "Tensor":
        return f"{type(x).__name__} of shape {tuple(x.shape)}"
    if isinstance(x, tuple):
        return f"a tuple of {len(x)}"
    return "None (a TODO still holds None: fill it in)" if x is None else type(x).__name__


def as_float64_array(x, what):
    """The learner's output as a NumPy float64 array, or CheckFailed saying what it is instead."""
    if not isinstance(x, np.ndarray):
        raise CheckFailed(f"{what} must be a NumPy array; it is {describe_value(x)}")
    if x.dtype != np.float64:
        raise CheckFailed(f"{what} is {x.dtype}, but the input was float64: keep the input's precision (an array "
                          f"you make takes the input's dtype, as np.ones(..., dtype=qkv.dtype) does)"
                          if x.dtype.kind == "f" else f"{what} is {x.dtype}, not float64")
    return x


def numpy_backward(module, path, forward_module):
    """attention_backward(dy, cache) -> dqkv, as backward(qkv, dy) -> dqkv, with the cache from
    forward_module's attention_forward. Checks it leaves dy alone."""
    def backward(qkv, dy):
        _, cache = learner_call(path, "attention_forward", forward_module.attention_forward, qkv.copy(), H)
        given = dy.copy()
        dqkv = learner_call(path, "attention_backward", module.attention_backward, given, cache)
        if not np.array_equal(given, dy):
            raise CheckFailed("attention_backward changed its input dy in place; the model uses dy again: work on "
                              "new arrays (x = x * a, not x *= a, on anything that shares dy's memory)")
        return dqkv
    return backward


# ------------------------------------------------------------------------------------------------
# check 1: runs, with the right shapes


def inputs(seed=0):
    """qkv (B, T, 3C) and an upstream gradient dy (B, T, C): standard normal, float64."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, 3 * C)), rng.standard_normal((B, T, C))


def check_shapes(forward, backward=None):
    """1. forward(qkv) gives y (B, T, C), finite; backward (if any) gives dqkv (B, T, 3C), finite."""
    qkv, dy = inputs()
    y = as_float64_array(forward(qkv), "y")
    if y.shape != (B, T, C):
        hint = (" (the heads are not merged back: (B, H, T, D) -> (B, T, H, D) -> (B, T, C))"
                if y.shape == (B, H, T, D) else "")
        raise CheckFailed(f"y has shape {y.shape}; from qkv {qkv.shape} with n_head {H} it must be (B, T, C) = "
                          f"{(B, T, C)}{hint}")
    if not np.isfinite(y).all():
        t = int(np.argwhere(~np.isfinite(y))[0][1])
        raise CheckFailed(f"y is not finite (nan or inf) at position {t}: a row of scores that is all -inf has no "
                          f"softmax. Query i may see keys j <= i, its own position included (np.triu(..., k=1))"
                          if t == 0 else f"y is not finite (nan or inf) at position {t}: does the softmax "
                          f"subtract each row's max before exp?")
    detail = f"qkv {qkv.shape} -> y {y.shape}"
    if backward is not None:
        dqkv = as_float64_array(backward(qkv, dy), "dqkv")
        if dqkv.shape != qkv.shape:
            raise CheckFailed(f"dqkv has shape {dqkv.shape}; it must have qkv's shape {qkv.shape}: dq, dk and dv "
                              f"(each (B, T, C) once the heads are merged) side by side along the last axis")
        if not np.isfinite(dqkv).all():
            raise CheckFailed("dqkv is not finite (nan or inf): is a masked weight's gradient multiplied by "
                              "-inf? Work with att, whose masked entries are 0, not with the scores")
        detail += f", dy {dy.shape} -> dqkv {dqkv.shape}"
    say("1. runs, shapes right", "ok", detail)


# ------------------------------------------------------------------------------------------------
# check 2: the forward


def check_forward(forward):
    """2. y equals numpy_gpt's in float64. The properties run either way (each a verdict line); where y
    differs, the first that fails is the hint, and if none fails, where y differs most."""
    qkv, _ = inputs(1)
    y, y_ref = forward(qkv), layers.attention_forward(qkv, H)[0]
    err = relative_error(y, y_ref)
    same = err <= FORWARD_TOL
    say("2. forward = numpy_gpt's", "ok" if same else "FAIL",
        f"largest difference {err:.1e} of y's scale, float64" + ("" if same else f" (at most {FORWARD_TOL:g})"))
    for label, probe in (("   heads kept apart", heads_probe), ("   no attention to the future", future_probe),
                         ("   each row of weights sums to 1", rows_probe),
                         ("   scores scaled by 1/sqrt(D)", scale_probe)):
        try:
            detail, hint = probe(forward, qkv)
        except CheckFailed:
            say(label, "FAIL")
            raise
        say(label, "FAIL" if hint else "ok", detail)
        if hint:
            raise CheckFailed(hint)
    if not same:
        b, t, c = np.unravel_index(np.abs(y - y_ref).argmax(), y.shape)
        raise CheckFailed(f"y differs from numpy_gpt's although every property holds; most at batch {b}, position "
                          f"{t}, channel {c} (head {c // D}). Check the weighted sum y = att @ v and that the heads "
                          f"come back in order")


def split(qkv):
    """qkv (B, T, 3C) -> q, k, v (B, H, T, D), views."""
    return [layers.split_heads(qkv[..., i * C:(i + 1) * C], H) for i in range(3)]


def join(q, k, v):
    """q, k, v (B, H, T, D) -> qkv (B, T, 3C)."""
    return np.concatenate([layers.merge_heads(a) for a in (q, k, v)], axis=-1)


def changes(forward, y, qkv_changed):
    """|forward(qkv_changed) - y|, elementwise, relative to y's scale."""
    return np.abs(forward(qkv_changed) - y) / np.abs(y).max()


def heads_probe(forward, qkv):
    """Change all of head h's q, k, v (its D channels of each): only head h's D channels of y may move."""
    y = forward(qkv)
    rng = np.random.default_rng(2)
    for h in range(H):
        q, k, v = (a.copy() for a in split(qkv))
        for a in (q, k, v):
            a[:, h] += rng.standard_normal(a[:, h].shape)
        moved = changes(forward, y, join(q, k, v))                      # (B, T, C)
        others = np.delete(moved, np.s_[h * D:(h + 1) * D], axis=-1)
        if others.max() > FORWARD_TOL:
            c = int(np.flatnonzero(moved.max(axis=(0, 1)) * (np.arange(C) // D != h) > FORWARD_TOL)[0])
            return (f"changing head {h}'s q, k, v changed y in channel {c} (head {c // D})",
                    f"the heads are mixed: head {h}'s q, k and v (channels {h * D}..{(h + 1) * D - 1} of each) changed "
                    f"another head's output. Split with reshape(B, T, H, D) then transpose to (B, H, T, D), and merge "
                    f"back with the reverse: transpose to (B, T, H, D), then reshape(B, T, C); a reshape alone "
                    f"mixes positions and heads")
        if moved[..., h * D:(h + 1) * D].max() <= FORWARD_TOL:
            return (f"changing head {h}'s q, k, v left its channels of y as they were",
                    f"head {h}'s output does not depend on its q, k and v: are the heads cut from qkv in the order "
                    f"q, k, v, with head h on channels h*D..(h+1)*D-1 of each?")
    return f"each of {H} heads moves only its own {D} channels", None


def future_probe(forward, qkv):
    """For each position t: change the values, then the keys, then the query at t; y at positions < t
    must not move."""
    y = forward(qkv)
    rng = np.random.default_rng(3)
    for t in range(1, T):
        for part, name in ((2, "values"), (1, "keys"), (0, "query")):
            changed = qkv.copy()
            changed[:, t, part * C:(part + 1) * C] += rng.standard_normal((B, C))
            moved = changes(forward, y, changed)[:, :t].max(axis=(0, 2))     # (t,) per earlier position
            if moved.max() > FORWARD_TOL:
                hit = [int(s) for s in np.flatnonzero(moved > FORWARD_TOL)]
                detail = f"changing the {name} at position {t} changed y at position(s) {', '.join(map(str, hit))}"
                return detail, {
                    "values": "the causal mask is missing: earlier positions read the values of later ones. Before "
                              "the softmax, set the scores where key j > query i to -inf (np.triu(..., k=1) or "
                              "torch.triu(..., 1) marks them)",
                    "keys": "future keys reach earlier outputs through the softmax's normalising sum: mask the scores "
                            "with -inf before the softmax, not the weights after it",
                    "query": "a later query changed an earlier output: the softmax normalises over the queries (axis "
                             "-2); it must run over the keys, the last axis, so that each query's row sums to 1",
                }[name]
    return "changing position t moves nothing before t, for every t", None


def rows_probe(forward, qkv):
    """With every value 1, y = the sum of each row of weights: it must be 1 everywhere."""
    q, k, v = split(qkv)
    y = forward(join(q, k, np.ones_like(v)))
    if np.abs(y - 1).max() > FORWARD_TOL:
        return (f"with every value 1, y ranges {y.min():.3g}..{y.max():.3g} instead of 1 everywhere",
                "the rows of weights do not sum to 1: the softmax must normalise each query's row of scores, over "
                "the keys (the last axis): exp(s - max) / sum(exp(s - max), axis=-1, keepdims=True)")
    return "with every value 1, y is 1 everywhere", None


def scale_probe(forward, qkv):
    """With one-hot values (value j of every head is the unit vector e_j, D >= T), y's head h at position i
    holds att[h, i, j] in channel j: the weights themselves. For j <= i,
    log att[i, j] - log att[i, 0] = s * q_i . (k_j - k_0), where s should be 1/sqrt(D). Fit s."""
    q, k, _ = split(qkv)
    onehot = np.broadcast_to(np.eye(T, D), (B, H, T, D))                # value j = e_j
    att = layers.split_heads(forward(join(q, k, onehot)), H)[..., :T]  # (B, H, T, T)
    i, j = np.tril_indices(T)                                           # every query i and visible key j <= i
    i, j = i[j > 0], j[j > 0]                                           # key 0 is the one compared against
    with np.errstate(divide="ignore", invalid="ignore"):
        lhs = np.log(att[..., i, j]) - np.log(att[..., i, 0])          # (B, H, pairs)
    rhs = np.einsum("bhpd,bhpd->bhp", q[:, :, i], k[:, :, j] - k[:, :, [0]])
    if not np.isfinite(lhs).all():
        return ("a weight of a visible key is 0", "some weights of visible keys (j <= i) are 0: only the future may be "
                "masked")
    s = float((lhs * rhs).sum() / (rhs * rhs).sum())
    # For weights that are a softmax of s * q . k the fit is exact to rounding (~1e-14); pairing query i with
    # anything but key j (k @ q^T, say) leaves a misfit of O(1).
    misfit = np.abs(lhs - s * rhs).max() / np.abs(lhs).max()
    if misfit > 1e-6:
        return ("the weights are not softmax(q . k times one number)",
                "the scores are not q_i . k_j times a constant: scores[i, j] pairs query i with key j, "
                "scores = q @ k.transpose(0, 1, 3, 2) (numpy) or q @ k.transpose(-2, -1) (torch), not k @ q^T")
    want = 1 / math.sqrt(D)
    detail = f"the scores are q . k x {s:.5g}; 1/sqrt(D) = 1/sqrt({D}) = {want:.5g}"
    if abs(s / want - 1) <= 1e-8:
        return detail, None
    known = {1.0: "the scores are not scaled: multiply q @ k^T by 1/sqrt(D)",
             1 / D: "the scores are divided by D; divide by sqrt(D)",
             math.sqrt(D): "the scores are multiplied by sqrt(D); divide by it",
             1 / math.sqrt(C): "the scores are divided by sqrt(C), the width of all heads; divide by sqrt(D), "
                               "one head's size (D = C // n_head)"}
    for factor, hint in known.items():
        if abs(s / factor - 1) <= 1e-8:
            return detail, hint + f" (D = {D} here)"
    return detail, f"the scores are scaled by {s:.5g}; they should be scaled by 1/sqrt(D) = {want:.5g} (D = {D} here)"


# ------------------------------------------------------------------------------------------------
# check 3: the backward


def numeric_grad(f, x, dy):
    """The gradient of L(x) = sum(f(x) * dy) by fourth-order centered differences, entry by entry."""
    grad = np.zeros_like(x)
    x = x.copy()
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    h = FD_STEP
    for n in range(flat.size):
        old = flat[n]
        at = []
        for step in (-2, -1, 1, 2):
            flat[n] = old + step * h
            at.append(float((f(x) * dy).sum()))
        flat[n] = old
        gflat[n] = (at[0] - 8 * at[1] + 8 * at[2] - at[3]) / (12 * h)
    return grad


def reference_terms(qkv, dy):
    """numpy_gpt's backward, step by step, and the wrong versions of each step that learners write, for the
    hints: name -> dqkv with one thing wrong."""
    _, (q, k, v, att, scale) = layers.attention_forward(qkv, H)
    g = layers.split_heads(dy, H)                                       # (B, H, T, D)
    tr = (0, 1, 3, 2)
    datt = g @ v.transpose(tr)                                          # (B, H, T, T)
    dv = att.transpose(tr) @ g
    dscores = layers.softmax_backward(datt, att)

    def grads(ds, dq=None, dk=None, dv_=None):
        return {"dq": ds @ (k * scale) if dq is None else dq,
                "dk": ds.transpose(tr) @ (q * scale) if dk is None else dk,
                "dv": dv if dv_ is None else dv_}
    right = grads(dscores)
    wrong = {
        "dscores ignores the softmax's normalising sum: each score moves every weight of its row through that sum, "
        "which gives dscores a second term besides att * datt": grads(att * datt),
        "the softmax's backward is missing: dscores is taken as datt, but att = softmax(scores) stands between "
        "them": grads(datt),
        "the softmax's normalising sum runs over the queries (axis -2); it runs over the keys, axis=-1, as the "
        "softmax did": grads(att * (datt - (att * datt).sum(axis=-2, keepdims=True))),
        "it looks transposed: from scores = (q * scale) @ k^T, dq = dscores @ k * scale (not dscores^T @ k)":
            grads(dscores, dq=dscores.transpose(tr) @ (k * scale)),
        "it looks transposed: from scores = (q * scale) @ k^T, dk = dscores^T @ q * scale (not dscores @ q)":
            grads(dscores, dk=dscores @ (q * scale)),
        "it looks transposed: from y = att @ v, dv = att^T @ dy (not att @ dy)": grads(dscores, dv_=att @ g),
        "dq and dk are swapped": grads(dscores, dq=right["dk"], dk=right["dq"]),
        "dq, dk and dv are not in qkv's order: q first, then k, then v":
            grads(dscores, dq=right["dv"], dv_=right["dq"]),
    }
    merge = layers.merge_heads
    return ({n: merge(a) for n, a in right.items()},
            {hint: {n: merge(a) for n, a in w.items()} for hint, w in wrong.items()})


def check_backward(forward, backward):
    """3. dq, dk, dv against finite differences of the forward and against numpy_gpt's attention_backward;
    the first that fails names its likely culprit."""
    qkv, dy = inputs(4)
    dqkv = backward(qkv, dy)
    numeric = numeric_grad(forward, qkv, dy)
    right, wrong = reference_terms(qkv, dy)
    for i, name in ((2, "dv"), (0, "dq"), (1, "dk")):
        got, fd = dqkv[..., i * C:(i + 1) * C], numeric[..., i * C:(i + 1) * C]
        err_fd, err_ref = relative_error(got, fd), relative_error(got, right[name])
        ok = err_fd <= FD_TOL and err_ref <= BACKWARD_TOL
        say(f"3. backward: {name}" if name == "dv" else f"   {name}", "ok" if ok else "FAIL",
            f"finite differences {err_fd:.1e}, numpy_gpt's {err_ref:.1e} of {name}'s scale")
        if not ok:
            hint = gradient_hint(name, got, right, wrong)
            raise CheckFailed(hint if hint.startswith(name) else f"{name} is wrong: {hint}")


def gradient_hint(name, got, right, wrong):
    """The likely culprit: a known wrong version that got matches, else a constant factor, else where."""
    for hint, grads in wrong.items():
        if relative_error(got, grads[name]) <= 1e-8:
            return hint
    ref = right[name]
    factor = float((got * ref).sum() / (ref * ref).sum())
    if relative_error(got, factor * ref) <= 1e-8:
        named = {math.sqrt(D): "sqrt(D)", 1 / math.sqrt(D): "1/sqrt(D)", -1.0: "-1 (the sign)", 2.0: "2", 0.5: "1/2"}
        for value, text in named.items():
            if abs(factor / value - 1) <= 1e-8:
                why = {"sqrt(D)": f": the scale 1/sqrt(D) is missing (D = {D}); scores = (q * scale) @ k^T, so "
                                  f"it multiplies dq and dk once",
                       "1/sqrt(D)": ": the scale is applied twice"}.get(text, "")
                return f"{name} is off by a factor of {text}{why}"
        return f"{name} is off by a factor of {factor:.5g}"
    b, t, c = np.unravel_index(np.abs(got - ref).argmax(), got.shape)
    return (f"{name} differs most at batch {b}, position {t}, head {c // D}; none of the usual slips explains it. "
            f"Work each line of the forward backwards, and check each intermediate's shape")


def check_torch_backward(run):
    """3. for the torch level: autograd's gradient through the learner's forward, against numpy_gpt's."""
    qkv, dy = inputs(4)
    right, _ = reference_terms(qkv, dy)
    dqkv = run(qkv, dy)
    err = max(relative_error(dqkv[..., i * C:(i + 1) * C], right[n]) for i, n in enumerate(("dq", "dk", "dv")))
    ok = err <= BACKWARD_TOL
    say("3. backward, autograd's", "ok" if ok else "FAIL", f"largest difference {err:.1e} of the "
        f"gradients' scale")
    if not ok:
        raise CheckFailed("autograd's gradient through your forward differs from numpy_gpt's attention_backward, "
                          "although the forward agrees: is part of it computed outside autograd (.detach(), .data, "
                          ".numpy(), an in-place change of a tensor autograd saved)?")

