"""The GPT in NumPy: parameters, the forward pass, its backward in reverse, and one-position decoding.

Shape key: B batch, T time, C channels, H heads, D head size (C // H), V vocab, L layers.

Parameters live in a plain dict whose keys are torch_gpt's state_dict() names, in the same order,
with Linear weights stored (out, in). One weights file therefore loads into either backend.
"""
import math

import numpy as np

from .data import INIT, stream
from .layers import (attention_forward, attention_backward, cross_entropy_forward, cross_entropy_backward,
                     dropout_forward, dropout_backward, dropout_mask, embedding_forward, embedding_backward, gelu_forward,
                     gelu_backward, layernorm_forward, layernorm_backward, linear_forward, linear_backward,
                     residual_forward, residual_backward, softmax)


def param_shapes(config):
    """name -> shape, in torch_gpt's state_dict() order."""
    V, T, C = config.vocab_size, config.block_size, config.n_embd
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for l in range(config.n_layer):
        p = f"h.{l}."
        shapes.update({
            p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
            p + "attn.c_attn.weight": (3 * C, C), p + "attn.c_attn.bias": (3 * C,),
            p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
            p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
            p + "mlp.c_fc.weight": (4 * C, C), p + "mlp.c_fc.bias": (4 * C,),
            p + "mlp.c_proj.weight": (C, 4 * C), p + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,), "lm_head.weight": (V, C)})
    return shapes


def init_params(config, seed=0, dtype=np.float32):
    """GPT-2 initialization: weights N(0, 0.02), the two residual-output projections N(0, 0.02/sqrt(2L))
    (so the residual stream's variance does not grow with depth), biases 0, LayerNorm weights 1.
    The numbers come from seed's INIT stream (numpy_gpt.data)."""
    rng = stream(seed, INIT)
    params = {}
    for name, shape in param_shapes(config).items():
        if len(shape) == 2:
            std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
            params[name] = (std * rng.standard_normal(shape)).astype(dtype)
        elif name.endswith(".weight"):      # the only 1-D weights are LayerNorm's
            params[name] = np.ones(shape, dtype=dtype)
        else:                               # biases
            params[name] = np.zeros(shape, dtype=dtype)
    return params


def dropout_masks(config, B, T, p, rng, dtype=np.float32):
    """The 2 * n_layer dropout masks (B, T, C) that gpt_forward(..., p, rng) draws and uses, in order (per
    layer: attention branch, then MLP branch). torch_gpt trains with these on a CPU and in float64, so
    the same rng gives both backends the same masks there (a GPU in float32 draws its own)."""
    return [dropout_mask((B, T, config.n_embd), p, rng, dtype) for _ in range(2 * config.n_layer)]


def num_params(params):
    return sum(p.size for p in params.values())


def gpt_forward(params, config, idx, targets=None, dropout=0.0, rng=None, masks=None):
    """idx (B, T) ints, targets (B, T) ints or None -> (logits, loss, cache).

    logits (B, T, V); loss a scalar, or None without targets.
    cache: each layer's cache, by layer name (the names torch_gpt's modules have), for gpt_backward.
    dropout: the probability of dropping each entry of a residual branch (training only; rng draws the
    masks, dropout_masks). The default 0 is the model itself, as evaluation, sampling and parity use it.
    masks: the masks, drawn already (dropout_masks), in place of dropout and rng: a trainer that splits
    a batch hands each part its rows of the whole batch's masks.
    """
    cache = {}
    if masks is None:
        masks = dropout_masks(config, *idx.shape, dropout, rng, params["wte.weight"].dtype) if dropout else \
            [None] * (2 * config.n_layer)
    x, cache["embed"] = embedding_forward(idx, params["wte.weight"], params["wpe.weight"])   # (B, T, C)
    for l in range(config.n_layer):
        p = f"h.{l}."
        # x = x + attn(ln_1(x))
        h, cache[p + "ln_1"] = layernorm_forward(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"])
        qkv, cache[p + "attn.c_attn"] = linear_forward(h, params[p + "attn.c_attn.weight"],
                                                       params[p + "attn.c_attn.bias"])          # (B, T, 3C)
        y, cache[p + "attn"] = attention_forward(qkv, config.n_head)                           # (B, T, C)
        a, cache[p + "attn.c_proj"] = linear_forward(y, params[p + "attn.c_proj.weight"],
                                                     params[p + "attn.c_proj.bias"])            # (B, T, C)
        a, cache[p + "attn.dropout"] = dropout_forward(a, masks[2 * l])
        x, _ = residual_forward(x, a)
        # x = x + mlp(ln_2(x))
        h, cache[p + "ln_2"] = layernorm_forward(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"])
        f, cache[p + "mlp.c_fc"] = linear_forward(h, params[p + "mlp.c_fc.weight"],
                                                  params[p + "mlp.c_fc.bias"])                  # (B, T, 4C)
        g, cache[p + "mlp.gelu"] = gelu_forward(f)                                             # (B, T, 4C)
        m, cache[p + "mlp.c_proj"] = linear_forward(g, params[p + "mlp.c_proj.weight"],
                                                    params[p + "mlp.c_proj.bias"])              # (B, T, C)
        m, cache[p + "mlp.dropout"] = dropout_forward(m, masks[2 * l + 1])
        x, _ = residual_forward(x, m)
    h, cache["ln_f"] = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])        # (B, T, C)
    logits, cache["lm_head"] = linear_forward(h, params["lm_head.weight"])                     # (B, T, V)
    loss = None
    if targets is not None:
        loss, cache["loss"] = cross_entropy_forward(logits, targets)
    return logits, loss, cache


def gpt_backward(params, config, cache):
    """The forward in reverse, seeded with dloss = 1 (cross_entropy_backward divides by B*T).

    -> grads: parameter name -> gradient, same keys, order and shapes as params.
    """
    grads = {}
    dlogits = cross_entropy_backward(1.0, cache["loss"])                                         # (B, T, V)
    dx, grads["lm_head.weight"], _ = linear_backward(dlogits, cache["lm_head"])                  # (B, T, C)
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = layernorm_backward(dx, cache["ln_f"])
    for l in reversed(range(config.n_layer)):
        p = f"h.{l}."
        # forward: x = x + mlp(ln_2(x))
        dx_skip, dm = residual_backward(dx, None)
        dm = dropout_backward(dm, cache[p + "mlp.dropout"])
        dg, grads[p + "mlp.c_proj.weight"], grads[p + "mlp.c_proj.bias"] = linear_backward(dm, cache[p + "mlp.c_proj"])
        df = gelu_backward(dg, cache[p + "mlp.gelu"])                                            # (B, T, 4C)
        dh, grads[p + "mlp.c_fc.weight"], grads[p + "mlp.c_fc.bias"] = linear_backward(df, cache[p + "mlp.c_fc"])
        dh, grads[p + "ln_2.weight"], grads[p + "ln_2.bias"] = layernorm_backward(dh, cache[p + "ln_2"])
        dx = dx_skip + dh                       # the two paths into x meet again
        # forward: x = x + attn(ln_1(x))
        dx_skip, da = residual_backward(dx, None)
        da = dropout_backward(da, cache[p + "attn.dropout"])
        dy, grads[p + "attn.c_proj.weight"], grads[p + "attn.c_proj.bias"] = linear_backward(da, cache[p + "attn.c_proj"])
        dqkv = attention_backward(dy, cache[p + "attn"])                                          # (B, T, 3C)
        dh, grads[p + "attn.c_attn.weight"], grads[p + "attn.c_attn.bias"] = linear_backward(dqkv, cache[p + "attn.c_attn"])
        dh, grads[p + "ln_1.weight"], grads[p + "ln_1.bias"] = layernorm_backward(dh, cache[p + "ln_1"])
        dx = dx_skip + dh
    grads["wte.weight"], grads["wpe.weight"] = embedding_backward(dx, cache["embed"])
    return {name: grads[name] for name in params}


# ------------------------------------------------------------------------------------------------
# generation: the forward for one new position, with the keys and values of earlier ones cached


def new_kv_cache(params, config, batch_size):
    """Room for the keys and values of every layer at every position: (L, 2, B, H, block_size, D)."""
    H, D = config.n_head, config.n_embd // config.n_head
    dtype = params["wte.weight"].dtype
    return np.zeros((config.n_layer, 2, batch_size, H, config.block_size, D), dtype=dtype)


def gpt_prefill(params, config, idx, kv):
    """Run the whole forward over idx (B, T), keep its keys and values in kv -> logits (B, V) of the
    last position. The next new position is T."""
    logits, _, cache = gpt_forward(params, config, idx)
    T = idx.shape[1]
    for l in range(config.n_layer):
        q, k, v, att, scale = cache[f"h.{l}.attn"]    # attention's cache holds its keys and values
        kv[l, 0, :, :, :T] = k                        # (B, H, T, D)
        kv[l, 1, :, :, :T] = v
    return logits[:, -1]


def gpt_decode(params, config, token, pos, kv):
    """token (B,) at position pos; kv holds keys and values of positions < pos -> logits (B, V).

    The same layers as gpt_forward for T = 1. The one new query attends to every cached position,
    so there is nothing to mask. At batch 1 a character costs what its NumPy calls cost, not their
    arithmetic, so the arrays stay 2-D, (B, C), and one position's heads, (B, H, 1, D), are a view
    of its channels.
    """
    C, H = config.n_embd, config.n_head
    B, D = token.shape[0], C // H
    scale = 1.0 / math.sqrt(D)
    x = params["wte.weight"][token] + params["wpe.weight"][pos]                                # (B, C)
    for l in range(config.n_layer):
        p = f"h.{l}."
        h, _ = layernorm_forward(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"])
        qkv, _ = linear_forward(h, params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"])   # (B, 3C)
        q, k, v = qkv.reshape(B, 3, H, 1, D).transpose(1, 0, 2, 3, 4)                          # (B, H, 1, D) each
        kv[l, 0, :, :, pos:pos + 1] = k                                          # (B, H, 1, D) at pos
        kv[l, 1, :, :, pos:pos + 1] = v
        keys, values = kv[l, 0, :, :, :pos + 1], kv[l, 1, :, :, :pos + 1]                      # (B, H, pos+1, D)
        att = softmax((q * scale) @ keys.transpose(0, 1, 3, 2))                               # (B, H, 1, pos+1)
        a, _ = linear_forward((att @ values).reshape(B, C), params[p + "attn.c_proj.weight"],
                              params[p + "attn.c_proj.bias"])
        x = x + a
        h, _ = layernorm_forward(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"])
        f, _ = linear_forward(h, params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"])  # (B, 4C)
        g, _ = gelu_forward(f)
        m, _ = linear_forward(g, params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"])
        x = x + m
    h, _ = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])
    logits, _ = linear_forward(h, params["lm_head.weight"])                                    # (B, V)
    return logits
