"""AdamW, global-norm gradient clipping and the learning-rate schedule.

AdamW and clipping follow torch.optim.AdamW and torch.nn.utils.clip_grad_norm_; the parity tests
check them against torch parameter by parameter. Parameters and gradients are dicts name -> array.
"""
import math

import numpy as np


def decays(name, p):
    """Weight decay applies to the 2-D weights (matmuls and embeddings), never to biases or LayerNorm."""
    return p.ndim == 2


def lr_at(step, lr, min_lr, warmup_steps, total_steps):
    """Learning rate for optimizer step `step` (0-based) of a run of `total_steps`.

    Linear warmup from lr/warmup_steps up to lr over the first warmup_steps, then a half cosine from lr
    down to min_lr, which it reaches at total_steps.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)   # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (lr - min_lr)


def clip_grad_norm(grads, max_norm):
    """Scale all gradients together so their global L2 norm is at most max_norm.

    -> (clipped grads, the norm before clipping). As torch: coef = max_norm / (norm + 1e-6), used only
    when below 1. max_norm <= 0 turns clipping off.
    """
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    coef = max_norm / (norm + 1e-6)
    if max_norm <= 0 or coef >= 1.0:
        return grads, norm
    return {name: g * coef for name, g in grads.items()}, norm


def adamw_init(params):
    """Optimizer state: the step count and each parameter's first and second moment, all zeros."""
    return {"step": 0,
            "m": {name: np.zeros_like(p) for name, p in params.items()},
            "v": {name: np.zeros_like(p) for name, p in params.items()}}


def adamw_step(params, grads, state, lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1):
    """One AdamW update, in place on params and state (Loshchilov & Hutter, arXiv:1711.05101).

        m = b1 m + (1 - b1) g                 moving mean of the gradient
        v = b2 v + (1 - b2) g^2               moving mean of its square
        m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)      bias correction: m, v start at 0
        p = p - lr * wd * p                   decoupled weight decay (2-D weights only)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    The defaults are the trainers' (numpy_gpt.machinery.cli, --beta1 --beta2 --weight-decay), not torch.optim.AdamW's
    (betas (0.9, 0.999), weight_decay 0.01).
    """
    b1, b2 = betas
    state["step"] += 1
    t = state["step"]
    for name, p in params.items():
        g, m, v = grads[name], state["m"][name], state["v"][name]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        if weight_decay and decays(name, p):
            p *= 1 - lr * weight_decay
        p -= lr * (m_hat / (np.sqrt(v_hat) + eps))
