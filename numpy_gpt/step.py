"""One training step: the step's batches, forward, backward, gradient clipping and AdamW, on plain arrays.

Shape key: B batch, T time. Parameters, gradients and AdamW's moments are dicts name -> array.

This is the whole of what numpy_gpt.train does to the weights; the rest of a run (evaluations, files,
resume, signals, progress) is numpy_gpt.machinery's. The trainer hands train_step a forward_backward
that cuts each batch into one part per core (numpy_gpt.machinery.threaded): the same math, with the
float sums in another order.
"""
import numpy as np

from .data import batch_rng, dropout_seed, get_batch
from .model import dropout_masks, gpt_backward, gpt_forward
from .optim import adamw_step, clip_grad_norm


def micro_batches(train_ids, config, step, seed, batch_size, grad_accum=1, dropout=0.0, dtype=np.float32):
    """Step's grad_accum micro-batches, each (x (B, T), y (B, T), its dropout masks or None).

    Each micro-batch has its own random streams, keyed by (seed, step, micro-batch) (numpy_gpt.data),
    so the data a step sees depends on nothing but its number.
    """
    out = []
    for micro in range(grad_accum):
        x, y = get_batch(train_ids, batch_size, config.block_size, batch_rng(seed, step, micro))
        masks = dropout_masks(config, *x.shape, dropout, np.random.default_rng(dropout_seed(seed, step, micro)),
                              dtype) if dropout else None
        out.append((x, y, masks))
    return out


def forward_backward(params, config, x, y, masks=None):
    """x, y (B, T), masks the batch's dropout masks or None -> (loss, grads) of the batch."""
    _, loss, cache = gpt_forward(params, config, x, y, masks=masks)
    return loss, gpt_backward(params, config, cache)


def train_step(params, opt, config, batches, lr, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0,
               forward_backward=forward_backward):
    """One optimizer step, in place on params and opt (AdamW's state, numpy_gpt.optim.adamw_init).

    batches: the step's micro-batches (micro_batches). Their gradients are averaged, as if they were
    one batch of all their rows; the mean is clipped to a global norm of grad_clip, then AdamW steps at
    learning rate lr. -> the last micro-batch's loss.
    """
    total = None
    for x, y, masks in batches:
        loss, grads = forward_backward(params, config, x, y, masks)
        total = grads if total is None else {name: total[name] + g for name, g in grads.items()}
    if len(batches) > 1:
        total = {name: g / len(batches) for name, g in total.items()}
    total, _ = clip_grad_norm(total, grad_clip)
    adamw_step(params, total, opt, lr, betas, weight_decay=weight_decay)
    return loss
