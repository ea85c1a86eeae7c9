"""torch_gpt's speed kernels: each the same function as the torch op it stands for, tested against it,
and used only where it pays. The model (torch_gpt.model) names each one where it calls it.

    Linear            nn.Linear on oneDNN's float32 kernels (OneDNNLinear), on x86-64 CPUs
    causal_products   causal attention as two batched products, for a CPU under bf16 autocast

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

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    vendor, so on an AMD CPU with AVX-512 it takes the faster path. (On Intel CPUs both take the AVX-512
    path.) `python -m benchmarks.parts` times both on the machine it runs on (docs/performance.md).

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
    code, and its backward is a large share of a bf16 training step of the kid. As two products,
    autocast hands them to oneDNN's bf16 kernels (AMX where the CPU has it); `python -m benchmarks.parts`
    times both on the machine it runs on (docs/performance.md). The scores are rounded to bfloat16, as every
    autocast product's output is; the softmax sums in float32.
    """
    B, H, T, D = q.shape
    future = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)  # (T, T): -inf above the diagonal
    scores = torch.baddbmm(future, q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2),
                           alpha=1 / math.sqrt(D))                              # (B*H, T, T) masked q k^T / sqrt(D)
    y = F.softmax(scores, dim=-1) @ v.reshape(B * H, T, D)                      # (B*H, T, D)
    return y.view(B, H, T, D)
