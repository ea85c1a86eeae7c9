"""Per-entry rounding bounds for comparing two float32 computations of the same training step.

Shape key: B batch, T time, C channels, V vocab, N = B*T positions.

A parameter's gradient is a sum over the N positions of the batch: for a linear layer y = x W^T + b,
dW[o, i] = sum_n dy[n, o] x[n, i] and db[o] = sum_n dy[n, o]; for a LayerNorm, dweight[c] =
sum_n dy[n, c] xhat[n, c] and dbias[c] = sum_n dy[n, c]; for the embeddings, dwte[v] = sum of dx[n]
over the positions holding token v and dwpe[t] = sum_b dx[b, t]. Summing n terms in float32, in any
order, errs by at most n u sum|term| (u = 2^-24; Higham, Accuracy and Stability of Numerical
Algorithms, 4.2), and by at most lambda sqrt(n) u sum|term| but with a vanishing probability
(parity.compare.gamma_tilde): the error of a sum that cancels is set by its terms' absolute values,
not by its result. terms_abs() computes that sum of absolute values, entry by entry, in float64 on the
same step.
"""
import json
import math
import os

import numpy as np
import torch

from numpy_gpt.machinery.rounding import gamma_tilde, path_roundings

U32 = 2.0 ** -24       # float32's unit roundoff
UBF16 = 2.0 ** -8      # bfloat16's


def gradient_error(terms, n_sum, config, T=None, u=U32):
    """-> per entry, the bound on how far one float32 gradient lies from the exact one: the probabilistic
    bound (parity.compare.gamma_tilde) of the roundings along one term's path (path_roundings) and of its
    final sum of n_sum terms, times the sum of the terms' absolute values (terms_abs). Two float32
    computations of the same gradient, in any summation order, differ by at most twice this."""
    return gamma_tilde(n_sum + path_roundings(config, T), u) * terms


def terms_abs(model, batches):
    """-> {parameter name: sum over the step's positions of |term|}, the same shapes as the gradients.

    Runs the step's forward and backward on a float64 copy of model, reads each layer's input and output
    gradient through hooks, and sums the absolute values of the terms each gradient entry adds up
    (see the module's docstring). batches: the step's [(x, y, masks)]; every micro-batch counts."""
    from torch_gpt.model import GPT
    m64 = GPT(model.config, dtype=torch.float64)
    m64.load_numpy({k: v.astype(np.float64) for k, v in model.numpy_params().items()})
    seen = {}                              # module name -> [(input (N, in), output gradient (N, out))]

    def hook(name):
        def forward_hook(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            if isinstance(module, torch.nn.LayerNorm):                      # xhat, what the gain multiplies
                x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + module.eps)
            output.register_hook(lambda dy: seen.setdefault(name, []).append((x, dy.detach().reshape(x.shape[0], -1))))
        return forward_hook

    def embed_hook(block, inputs):                                          # the residual stream at block 0
        x = inputs[0]
        x.register_hook(lambda dx: seen.setdefault("embed", []).append(dx.detach()))

    handles = [mod.register_forward_hook(hook(name)) for name, mod in m64.named_modules()
               if isinstance(mod, (torch.nn.Linear, torch.nn.LayerNorm))]
    handles.append(m64.h[0].register_forward_pre_hook(embed_hook))
    ids = []
    for x, y, masks in batches:
        masks = None if masks is None else [mk.double() for mk in masks]
        (m64(x, y, masks=masks)[1] / len(batches)).backward()
        ids.append(x)
    for h in handles:
        h.remove()
    out = {}
    for name, mod in m64.named_modules():
        if name not in seen:
            continue
        xs = torch.cat([x for x, _ in seen[name]])                          # (N, in)
        dys = torch.cat([dy for _, dy in seen[name]])                       # (N, out)
        if isinstance(mod, torch.nn.LayerNorm):
            out[name + ".weight"] = (dys * xs).abs().sum(0)
        else:
            out[name + ".weight"] = dys.abs().T @ xs.abs()                  # (out, in)
        if getattr(mod, "bias", None) is not None:
            out[name + ".bias"] = dys.abs().sum(0)
    dx = torch.cat([d for d in seen["embed"]]).abs()                        # (B, T, C)
    idx = torch.cat(ids)                                                    # (B, T)
    out["wpe.weight"] = torch.zeros_like(m64.wpe.weight).index_add_(0, torch.arange(dx.shape[1]), dx.sum(0))
    out["wte.weight"] = torch.zeros_like(m64.wte.weight).index_add_(0, idx.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    return {k: v.numpy() for k, v in out.items()}


def adamw_first_step_error(grad, grad_err, params, lr, clip_norm, eps=1e-8, u=U32):
    """-> {name: per-entry bound on |p1 - p1'|} for two first AdamW steps from the same parameters
    params, with clipping to clip_norm, from two gradients that each lie within grad_err of the exact
    one (grad is one of them).

    AdamW's first step moves a parameter by -lr m/(sqrt(v) + eps) with m = g, v = g^2 after bias
    correction: by -lr c g / (c|g| + eps) for the clipped gradient c g (c = clip_norm / ||g||, or 1), and
    a decayed one also by -lr wd p. The update's derivative in g is lr c eps / (c|g| + eps)^2: at most
    lr c / eps where g is near zero, lr eps / (c g^2) where |g| >> eps. So an entry whose gradient is
    within rounding of zero may take any update in [-lr, lr], and an entry whose gradient stands clear
    of its error is pinned to a fraction of its own error. Terms of the bound, each per entry:
      1. the gradient's error, 2 grad_err, times the largest derivative over the gradients it allows
         (those at least |g| - 2 grad_err from zero); never more than 2 lr, the most two updates differ;
      2. the clipping factor's relative error ||2 grad_err|| / ||g|| times the update's sensitivity to
         it, lr c|g| eps / (c|g| + eps)^2 <= lr / 4;
      3. the step's own roundings: 8 at the parameter's scale (the decay factor, the decayed and the
         updated parameter, in each step; see parity.compare.UPDATE_ROUNDINGS), 8 at the update's (the
         moments, the bias corrections, the square root, the division) in each.
    """
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grad.values()))
    c = min(1.0, clip_norm / (norm + 1e-6)) if clip_norm > 0 else 1.0
    c_err = (math.sqrt(sum(float(((2 * e) ** 2).sum()) for e in grad_err.values())) / norm) if c < 1 else 0.0
    out = {}
    for name, g in grad.items():
        g, e, p = np.abs(g.astype(np.float64)), 2 * grad_err[name], np.abs(params[name].astype(np.float64))
        nearest = c * np.maximum(g - e, 0.0)                                # the gradient nearest zero it allows
        term1 = np.minimum(lr * c * eps * e / (nearest + eps) ** 2, 2 * lr)
        term2 = lr / 4 * c_err
        out[name] = term1 + term2 + 8 * u * p + 8 * u * lr
    return out


def margins(diffs, bounds):
    """-> {name: the largest |difference| / bound over its entries}: at most 1 where every entry is within
    its bound. An entry whose bound is 0 (a gradient no term reaches) must be exactly equal."""
    out = {}
    for name, d in diffs.items():
        d, b = np.abs(np.asarray(d, dtype=np.float64)), np.asarray(bounds[name], dtype=np.float64)
        ratio = np.where(b > 0, d / np.where(b > 0, b, 1), np.where(d > 0, np.inf, 0.0))
        out[name] = float(ratio.max()) if ratio.size else 0.0
    return out


def record_margin(test, margin, what=""):
    """With TINY_LLM_MARGINS=FILE in the environment, append the test's worst margin (measured / bar) and
    the kernel path it ran on (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) to FILE as a JSON line;
    benchmarks/margins.py tabulates them. Without it, nothing."""
    path = os.environ.get("TINY_LLM_MARGINS")
    if not path:
        return
    line = json.dumps({"test": test, "what": what, "margin": float(margin),
                       "aten": os.environ.get("ATEN_CPU_CAPABILITY", ""), "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA", "")})
    with open(path, "a") as f:            # one short line per write: concurrent writers do not interleave
        f.write(line + "\n")


# numpy_gpt.train as a user runs it, carrying the error model of a run of many steps
# (numpy_gpt.machinery.rounding.Shadow): each micro-batch's gradients and each step's parameters moved by the errors
# two correct backends may make. Test-only: it wraps NumpyBackend's methods from outside. It also writes
# LOGITS_FILE in --out: for each evaluation, in order, its split and the largest |logit| it saw (the
# shadow's, which differ from numpy_gpt's own run's by the run's drift, far below their size).
SHADOW_RUN = """
import json, os, sys
import numpy as np
import numpy_gpt.machinery.threaded as threaded
import numpy_gpt.train as trainer
from numpy_gpt.machinery.cli import run_cli
from numpy_gpt.machinery.rounding import Shadow
record, shadow, seen, evaluations = sys.argv.pop(1), Shadow(), [], []
Backend, forward = threaded.NumpyBackend, threaded.gpt_forward
forward_backward, train_step, evaluate = Backend.forward_backward, Backend.train_step, Backend.evaluate
def watched_forward(*args, **kwargs):
    out = forward(*args, **kwargs)
    seen.append(float(np.abs(out[0]).max()))
    return out
def shadowed_forward_backward(self, *args):
    loss, grads = forward_backward(self, *args)
    return loss, shadow.gradients(grads)
def shadowed_train_step(self, step, lr):
    loss = train_step(self, step, lr)
    shadow.after_step(self.weights)
    return loss
def watched_evaluate(self, split):
    seen.clear()
    loss = evaluate(self, split)
    evaluations.append({"split": split, "logits": max(seen)})
    os.makedirs(os.path.dirname(record), exist_ok=True)
    with open(record, "w") as f:
        json.dump(evaluations, f)
    return loss
threaded.gpt_forward = watched_forward
Backend.forward_backward, Backend.train_step = shadowed_forward_backward, shadowed_train_step
Backend.evaluate = watched_evaluate
run_cli(trainer.main)
"""
LOGITS_FILE = "logits.json"


def logged_run_rows(got, want, ref, shadow):
    """Rows comparing two float64 runs' --out folders, got against want, with the bars that numpy_gpt's
    run of the same flags (ref's folder) and its shadow run (SHADOW_RUN's) set: every parameter and
    AdamW moment (parity.compare.compare_run), then every logged loss (compare_losses)."""
    from numpy_gpt.machinery.checkpoint import load_state
    from parity.compare import compare_losses, compare_run
    states = [load_state(folder / "kid.pt") for folder in (got, want, ref, shadow)]
    rows = [row for part in ("params", "m", "v")
            for row in compare_run(f"{part} ", *(state[part] for state in states))]
    logs = [[json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
            for folder in (got, want, ref, shadow)]
    assert len({tuple(e["step"] for e in log) for log in logs}) == 1, "the runs logged different steps"
    evaluations = json.loads((shadow / LOGITS_FILE).read_text())
    for split in ("train_loss", "val_loss"):
        logits = [e["logits"] for e in evaluations if e["split"] == split.split("_")[0]]
        rows += compare_losses(f"{split} at evaluation ", *([e[split] for e in log] for log in logs), logits)
    return rows
