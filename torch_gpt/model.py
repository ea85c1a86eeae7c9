"""The GPT in PyTorch: the same model as numpy_gpt, with the same config, parameter names and init.

Shape key: B batch, T time, C channels, H heads, D head size (C // H), V vocab, L layers.

forward() uses F.scaled_dot_product_attention. Pass acts={} and it takes the explicit path instead:
a masked softmax you can read, which fills acts with every intermediate activation under the names
numpy_gpt.gpt_forward uses. tests/test_torch_model.py checks that the two paths agree.

Dropout masks are not drawn here: the trainer draws them with numpy_gpt.model.dropout_masks, from the
same seeded NumPy stream numpy_gpt uses, and passes them in. So both backends drop the same entries.

Linear runs its float32 CPU matmuls on oneDNN (OneDNNLinear), through a private torch op. At its first
use in a process, oneDNN must pass a self-check against F.linear (onednn_self_check); if it fails, Linear
says why in one line on stderr and runs F.linear from then on. Set TINY_LLM_ONEDNN=0 in the environment
to turn oneDNN off (it is read at that first use).
"""
import functools
import math
import os
import platform
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from numpy_gpt.model import init_params

GELU_K = math.sqrt(2 / math.pi)


class TanhGELU(torch.autograd.Function):
    """GELU with the tanh approximation, the function nn.GELU(approximate="tanh") computes.

    gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
            = x sigmoid(2u)         since 0.5 (1 + tanh(u)) = sigmoid(2u)

    The second form is the same function, but torch's CPU sigmoid is about 7x faster than its tanh:
    with the built-in, GELU was the slowest op of a CPU training step after the matmuls.
    tests/test_torch_model.py checks it, forward and backward, against nn.GELU(approximate="tanh").
    """

    @staticmethod
    def forward(ctx, x):
        s = x * x
        s.mul_(2 * GELU_K * 0.044715).add_(2 * GELU_K).mul_(x).sigmoid_()        # sigmoid(2u)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, dout):
        x, s = ctx.saved_tensors
        # d/dx [x s] = s + x s (1 - s) d(2u)/dx,   d(2u)/dx = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        dx = x * x
        dx.mul_(6 * GELU_K * 0.044715).add_(2 * GELU_K).mul_(x)                  # x d(2u)/dx
        return dx.mul_(1 - s).add_(1).mul_(s).mul_(dout)


def gelu(f):
    """GELU (tanh approximation): TanhGELU where autograd will need its backward on a CPU in float32 or
    float64 (training), else the built-in single op: its per-call cost is lower on generation's
    one-position tensors, and under bf16 autocast (f is then bfloat16, the output of an autocast
    product) and off the CPU it is the fused kernel, which computes in float32 (TanhGELU, a custom
    Function that autocast does not know, would compute in bfloat16, in six passes)."""
    if f.requires_grad and f.device.type == "cpu" and f.dtype != torch.bfloat16:
        return TanhGELU.apply(f)
    return F.gelu(f, approximate="tanh")


# oneDNN's matmul kernels, where this torch has them: x86-64 CPUs, float32 (see Linear)
ONEDNN_LINEAR = (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
                 and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
# below this many rows (positions x batch) a oneDNN call costs more than it saves: sampling's
# one-position steps ran 2 to 3x slower on it (benchmarks: sampling with the KV cache)
ONEDNN_MIN_ROWS = 64


class OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b, as F.linear, on oneDNN's kernels instead of the BLAS torch calls for float32 matmuls.

    Why: torch's CPU float32 matmul is MKL's sgemm, and MKL takes its AVX2 code path on AMD CPUs even
    where they have AVX-512. oneDNN (bundled with torch) picks its kernels by instruction set, not by
    vendor. On this project's AMD EPYC machine its matmuls run about twice as fast, which cuts a
    training step of the kid by about a quarter. (On Intel CPUs both take the AVX-512 path.)

    backward, from y = x W^T + b with x (N, in), W (out, in), dy (N, out):
        dx = dy W          (N, in):   oneDNN again, with W^T (in, out) as its weight
        dW = dy^T x        (out, in): oneDNN copies the transposed operand it takes as input and reads
                                      the one it takes as weight in place, so the narrower of x and dy
                                      goes in as the input: (x^T dy)^T if in <= out, else dy^T x
        db = sum_n dy      (out,)
    Each gradient is computed only if autograd needs it (ctx.needs_input_grad): no dx for an input
    that does not require grad, no dW or db for frozen parameters. The backward is not differentiable
    itself (mkldnn's op has no autograd formula), so a double backward raises instead of returning
    zeros. tests/test_torch_model.py checks all three gradients against F.linear's autograd.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")       # (..., out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dx = dweight = dbias = None
        dy2 = dy.reshape(-1, dy.shape[-1])                                          # (N, out)
        if ctx.needs_input_grad[0]:
            dx = torch.ops.mkldnn._linear_pointwise(dy, weight.t(), None, "none", [], "")     # (..., in)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])                                         # (N, in)
            if x2.shape[1] <= dy2.shape[1]:                                         # (x^T dy)^T: (out, in)
                dweight = torch.ops.mkldnn._linear_pointwise(x2.t(), dy2.t(), None, "none", [], "").t()
            else:                                                                   # dy^T x: (out, in)
                dweight = torch.ops.mkldnn._linear_pointwise(dy2.t(), x2.t(), None, "none", [], "")
        if ctx.needs_input_grad[2]:                                                 # False where bias is None
            dbias = dy2.sum(0)                                                      # (out,)
        return dx, dweight, dbias


def onednn_self_check():
    """None if OneDNNLinear's output and gradients match F.linear's on two small random float32
    problems, else why not, in a few words.

    The two problems take both forms of the dW call (in < out and in > out), one with a bias and one
    without. The reference is float64 F.linear, and each entry of y, dx, dW and db must lie within twice
    the float32 rounding bound of its K-term dot product, 2 K u sum_k |a_k b_k| (u = 2^-24; Higham,
    Accuracy and Stability of Numerical Algorithms, 3.1), as in tests/test_torch_model.py. The bound
    holds in any summation order; the factor 2 covers its second-order term and the reference's own
    rounding. A wrong operand, transpose or term misses by O(1). It draws from its own generator, so
    the caller's random stream is untouched.
    """
    g = torch.Generator().manual_seed(0)
    u = 2.0 ** -24
    N = 6                                                   # rows: x is (2, 3, in)
    try:
        with torch.inference_mode(False), torch.enable_grad():          # its first use may be in eval
            for n_in, n_out, bias in ((5, 7, True), (7, 5, False)):
                x = torch.randn(2, 3, n_in, generator=g)                            # (2, 3, in)
                w = torch.randn(n_out, n_in, generator=g)                           # (out, in)
                b = torch.randn(n_out, generator=g) if bias else None              # (out,)
                dy = torch.randn(2, 3, n_out, generator=g)                          # (2, 3, out)
                inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
                y = OneDNNLinear.apply(x, w, b)
                got = (y,) + torch.autograd.grad(y, inputs, dy)                     # y, dx, dW[, db]
                ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
                y_ref = F.linear(*ref_inputs)
                want = (y_ref,) + torch.autograd.grad(y_ref, ref_inputs, dy.double())
                xa, wa, dya = x.detach().abs().reshape(N, n_in), w.detach().abs(), dy.abs().reshape(N, n_out)
                bounds = [2 * (n_in + bias) * u * (xa @ wa.T + (b.detach().abs() if bias else 0)),  # y  (N, out)
                          2 * n_out * u * (dya @ wa),                                           # dx (N, in)
                          2 * N * u * (dya.T @ xa),                                             # dW (out, in)
                          2 * N * u * dya.sum(0)]                                               # db (out,)
                for name, a, a_ref, bound in zip(("output y", "gradient dx", "gradient dW", "gradient db"),
                                                 got, want, bounds):
                    if a.shape != a_ref.shape or a.dtype != torch.float32:
                        return f"its {name} is {a.dtype} {tuple(a.shape)}, not float32 {tuple(a_ref.shape)}"
                    error = (a.double() - a_ref).abs().reshape(bound.shape)
                    if not (error <= bound).all():
                        return f"its {name} is off by up to {error.max().item():.3g}, beyond float32 rounding"
    except Exception as e:                                  # missing, changed or failing: say which, on one line
        lines = str(e).strip().splitlines()
        return type(e).__name__ + (f": {lines[0]}" if lines else "")
    return None


@functools.cache
def onednn_usable():
    """Whether Linear runs on oneDNN: this torch and CPU have it (ONEDNN_LINEAR), TINY_LLM_ONEDNN is not
    0, and it passes onednn_self_check. Decided at the first call, once a process (tests reset it with
    onednn_usable.cache_clear()); a failed self-check is said once, here."""
    if not ONEDNN_LINEAR or os.environ.get("TINY_LLM_ONEDNN") == "0":
        return False
    failure = onednn_self_check()
    if failure is not None:
        print(f"torch_gpt: oneDNN linear failed its self-check ({failure}); using F.linear", file=sys.stderr)
    return failure is None


class Linear(nn.Linear):
    """nn.Linear, on oneDNN's kernels (OneDNNLinear) for float32 on an x86-64 CPU, at ONEDNN_MIN_ROWS
    rows or more, where onednn_usable() (not switched off, self-check passed). The same parameters,
    names and function; only the matmul routine differs. Under bf16 autocast, F.linear is autocast's
    bfloat16 product (oneDNN's too); under torch.compile, the compiler picks its own matmul kernels."""

    def forward(self, x):
        if (x.numel() >= ONEDNN_MIN_ROWS * x.shape[-1] and x.dtype == torch.float32 and x.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling() and onednn_usable()):
            return OneDNNLinear.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def causal_products(q, k, v):
    """Causal attention as two batched products, for a CPU under bfloat16 autocast: q, k, v (B, H, T, D)
    -> (B, H, T, D). The same function as F.scaled_dot_product_attention(q, k, v, is_causal=True).

    Why: on a CPU, scaled_dot_product_attention's bf16 flash kernel runs its small products on vector
    code, and its backward took a third of a bf16 training step of the kid (61 ms of attention forward
    and backward a layer, on this project's Xeon). As two products, autocast hands them to oneDNN's
    bf16 kernels (AMX where the CPU has it): 17 ms. The scores are rounded to bfloat16, as every
    autocast product's output is; the softmax sums in float32.
    """
    B, H, T, D = q.shape
    future = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)  # (T, T): -inf above the diagonal
    scores = torch.baddbmm(future, q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2),
                           alpha=1 / math.sqrt(D))                              # (B*H, T, T) masked q k^T / sqrt(D)
    y = F.softmax(scores, dim=-1) @ v.reshape(B * H, T, D)                      # (B*H, T, D)
    return y.view(B, H, T, D)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)   # q, k, v for all heads at once
        self.c_proj = Linear(config.n_embd, config.n_embd)

    def forward(self, x, acts=None, prefix=""):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)                    # (B, T, C) each
        q = q.view(B, T, H, C // H).transpose(1, 2)                 # (B, H, T, D)
        k = k.view(B, T, H, C // H).transpose(1, 2)                 # (B, H, T, D)
        v = v.view(B, T, H, C // H).transpose(1, 2)                 # (B, H, T, D)
        if acts is None and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            y = causal_products(q, k, v)                                     # (B, H, T, D)
        elif acts is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)      # (B, H, T, D)
        else:
            # the explicit path: scores, causal mask, softmax, weighted sum of the values
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)           # (B, H, T, T)
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            att = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)   # (B, H, T, T)
            y = att @ v                                                      # (B, H, T, D)
            acts.update({prefix + "q": q, prefix + "k": k, prefix + "v": v, prefix + "att": att})
        y = y.transpose(1, 2).reshape(B, T, C)                      # (B, T, C) heads side by side
        out = self.c_proj(y)                                        # (B, T, C)
        if acts is not None:
            acts.update({prefix + "y": y, prefix + "c_proj": out})
        return out


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x, acts=None, prefix=""):
        f = self.c_fc(x)                                            # (B, T, 4C)
        g = gelu(f)                                                 # (B, T, 4C)
        out = self.c_proj(g)                                        # (B, T, C)
        if acts is not None:
            acts.update({prefix + "c_fc": f, prefix + "gelu": g, prefix + "c_proj": out})
        return out


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, acts=None, prefix="", masks=(None, None)):
        """masks: the dropout masks (B, T, C) of the two residual branches, or None for no dropout."""
        h = self.ln_1(x)
        a = self.attn(h, acts, prefix + "attn.")
        x = x + (a if masks[0] is None else a * masks[0])
        if acts is not None:
            acts.update({prefix + "ln_1": h, prefix + "res_attn": x})
        h = self.ln_2(x)
        m = self.mlp(h, acts, prefix + "mlp.")
        x = x + (m if masks[1] is None else m * masks[1])
        if acts is not None:
            acts.update({prefix + "ln_2": h, prefix + "res_mlp": x})
        return x


class GPT(nn.Module):
    def __init__(self, config, seed=0, dtype=torch.float32):
        """Parameters start from numpy_gpt.init_params(config, seed): the same seed gives the same
        weights in both backends."""
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.to(dtype)
        self.load_numpy(init_params(config, seed, np.float64 if dtype == torch.float64 else np.float32))

    def load_numpy(self, params):
        """Copy in a dict name -> NumPy array (numpy_gpt's parameters, or a loaded weights file)."""
        self.load_state_dict({name: torch.from_numpy(np.ascontiguousarray(p)) for name, p in params.items()})

    def numpy_params(self):
        return {name: t.detach().cpu().numpy().copy() for name, t in self.state_dict().items()}

    def forward(self, idx, targets=None, acts=None, masks=None):
        """idx (B, T), targets (B, T) or None -> (logits (B, T, V), loss or None).

        With acts (a dict), every intermediate activation is recorded in it, via explicit attention.
        masks: for training with dropout, the 2 * n_layer masks of numpy_gpt.model.dropout_masks, as
        tensors on the model's device; None (evaluation, sampling, parity) is the model without dropout.
        """
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe.weight[:T]                     # (B, T, C)
        if acts is not None:
            acts["embed"] = x
        for l, block in enumerate(self.h):
            x = block(x, acts, f"h.{l}.", (None, None) if masks is None else masks[2 * l:2 * l + 2])
        h = self.ln_f(x)
        logits = self.lm_head(h)                                    # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        if acts is not None:
            acts.update({"ln_f": h, "logits": logits})
            if loss is not None:
                acts["loss"] = loss
        return logits, loss

    # --------------------------------------------------------------------------------------------
    # generation with a KV cache: the same functions as numpy_gpt.gpt_prefill and gpt_decode

    def new_kv_cache(self, batch_size):
        """Room for every layer's keys and values at every position: (L, 2, B, H, block_size, D)."""
        c = self.config
        return torch.zeros(c.n_layer, 2, batch_size, c.n_head, c.block_size, c.n_embd // c.n_head,
                           dtype=self.wte.weight.dtype, device=self.wte.weight.device)

    @torch.inference_mode()
    def prefill(self, idx, kv):
        """Forward over idx (B, T), keeping its keys and values in kv -> logits (B, V) of the last position."""
        acts = {}
        logits, _ = self(idx, acts=acts)
        T = idx.shape[1]
        for l in range(self.config.n_layer):
            kv[l, 0, :, :, :T] = acts[f"h.{l}.attn.k"]
            kv[l, 1, :, :, :T] = acts[f"h.{l}.attn.v"]
        return logits[:, -1]

    @torch.inference_mode()
    def decode(self, token, pos, kv):
        """token (B,) at position pos; kv holds keys and values of positions < pos -> logits (B, V).

        The same layers as forward, called as functions on their weights: at batch 1 a character costs
        what its torch calls cost to dispatch, not their arithmetic, and this makes fewer of them.
        One position's heads, (B, H, 1, D), lie in memory as its channels (B, C) do.
        """
        C, H = self.config.n_embd, self.config.n_head
        B, D = token.shape[0], C // H
        x = self.wte.weight[token] + self.wpe.weight[pos]                                 # (B, C)
        for l, b in enumerate(self.h):
            a, m = b.attn, b.mlp
            qkv = F.linear(F.layer_norm(x, (C,), b.ln_1.weight, b.ln_1.bias), a.c_attn.weight, a.c_attn.bias)
            qkv = qkv.view(B, 3, H, 1, D).transpose(0, 1)                                 # (3, B, H, 1, D)
            kv[l, :, :, :, pos:pos + 1] = qkv[1:]                                         # this position's k, v
            y = F.scaled_dot_product_attention(qkv[0], kv[l, 0, :, :, :pos + 1], kv[l, 1, :, :, :pos + 1])
            x = x + F.linear(y.view(B, C), a.c_proj.weight, a.c_proj.bias)               # y: (B, H, 1, D)
            f = F.linear(F.layer_norm(x, (C,), b.ln_2.weight, b.ln_2.bias), m.c_fc.weight, m.c_fc.bias)
            x = x + F.linear(F.gelu(f, approximate="tanh"), m.c_proj.weight, m.c_proj.bias)
        return F.linear(F.layer_norm(x, (C,), self.ln_f.weight, self.ln_f.bias), self.lm_head.weight)  # (B, V)
