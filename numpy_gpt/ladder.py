"""The ladder: from guessing to the kid, one idea at a time, each rung built from numpy_gpt's own layers.

    0 uniform    every character equally likely: the loss is ln V, and there is nothing to train
    1 bigram     a V x V table: the current character's row holds the next character's logits
    2 attention  token and position embeddings, one causal self-attention head, the output head
    3 heads      four heads, and the projection c_proj that mixes what they found
    4 mlp        then the MLP (c_fc, GELU, c_proj), still no residual and no LayerNorm
    5 block      one full block: residual connections and LayerNorm around attention and the MLP
               (the kid's own gpt_forward with n_layer = 1, no dropout)
    6 kid        four blocks and dropout: numpy_gpt.model as it is

Rungs 2 to 4 are one small forward/backward pair below, bare_forward and bare_backward: the layers of
one block without its residual stream and LayerNorms, each part switched on by the rung. Rungs 5 and 6
call the kid's gpt_forward and gpt_backward. Every rung's parameters keep torch_gpt's names, so
"h.0.attn.c_attn.weight" is the same matrix, of the same shape, on every rung that has it.

A rung trains as the kid does (train_step): the same batches (numpy_gpt.data.batch_rng), AdamW with
the kid's settings, the same warmup and cosine schedule, and global-norm clipping.
`python -m numpy_gpt.ladder` trains them all and writes the table (numpy_gpt/ladder_run.py);
docs/ladder.md has a measured one, and what each rung bought.

Shape key: B batch, T time, C channels, H heads, D head size (C // H), V vocab.
"""
import math

import numpy as np

from .config import GPTConfig
from .data import INIT, batch_rng, dropout_seed, get_batch, stream
from .layers import (attention_backward, attention_forward, cross_entropy_backward, cross_entropy_forward,
                     embedding_backward, embedding_forward, gelu_backward, gelu_forward, linear_backward,
                     linear_forward)
from .model import gpt_backward, gpt_forward, init_params, param_shapes
from .optim import adamw_init, adamw_step, clip_grad_norm, lr_at

RUNGS = ("uniform", "bigram", "attention", "heads", "mlp", "block", "kid")

# The parts of one block that rungs 2 to 4 have, by parameter-name prefix under "h.0.".
BARE_PARTS = {"attention": ("attn.c_attn",),
              "heads": ("attn.c_attn", "attn.c_proj"),
              "mlp": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}

# Each rung's blocks and heads; the other fields (V, T, C) are the kid's. uniform and bigram use only V and T.
RUNG_SHAPE = {"uniform": {"n_layer": 1, "n_head": 1}, "bigram": {"n_layer": 1, "n_head": 1},
              "attention": {"n_layer": 1, "n_head": 1}, "heads": {"n_layer": 1, "n_head": 4},
              "mlp": {"n_layer": 1, "n_head": 4}, "block": {"n_layer": 1, "n_head": 4},
              "kid": {"n_layer": 4, "n_head": 4}}

# Dropout in training: the kid's (numpy_gpt.machinery.cli's --dropout default); no other rung has any.
DROPOUT = {"kid": 0.1}


def rung_config(rung, **overrides):
    """-> the rung's GPTConfig: the kid's, with the rung's n_layer and n_head, then any overrides."""
    return GPTConfig(**{**RUNG_SHAPE[rung], **overrides})


def rung_param_shapes(rung, config):
    """name -> shape, in torch_gpt's state_dict() order (the kid's names, wherever a rung shares a tensor)."""
    V = config.vocab_size
    if rung == "uniform":
        return {}
    if rung == "bigram":
        return {"bigram.weight": (V, V)}
    shapes = param_shapes(config)
    if rung in BARE_PARTS:
        keep = ("h.0." + part + "." for part in BARE_PARTS[rung])
        prefixes = ("wte.", "wpe.", "lm_head.", *keep)
        shapes = {name: shape for name, shape in shapes.items() if name.startswith(prefixes)}
    return shapes


def init_rung(rung, config, seed=0, dtype=np.float32):
    """The kid's initialization (numpy_gpt.model.init_params) for the rung's tensors.

    block and kid: init_params itself. The others have no LayerNorm, so the rule is: 2-D weights
    N(0, 0.02), c_proj weights N(0, 0.02/sqrt(2 n_layer)), biases 0, drawn from seed's INIT stream in
    rung_param_shapes order. The bigram table too starts at N(0, 0.02): every row near uniform.
    """
    if rung in ("block", "kid"):
        return init_params(config, seed=seed, dtype=dtype)
    rng = stream(seed, INIT)
    params = {}
    for name, shape in rung_param_shapes(rung, config).items():
        if len(shape) == 2:
            std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
            params[name] = (std * rng.standard_normal(shape)).astype(dtype)
        else:                                   # biases
            params[name] = np.zeros(shape, dtype=dtype)
    return params


# ------------------------------------------------------------------------------------------------
# rungs 2 to 4: embeddings, attention, optionally c_proj and the MLP, then the output head


def bare_forward(params, config, idx, parts):
    """idx (B, T) -> (logits (B, T, V), cache). parts: BARE_PARTS of the rung.

    The block's layers, one after the other with nothing around them: each layer's output is the next
    one's input, with no residual path beside it and no LayerNorm before it.
    """
    cache = {}
    x, cache["embed"] = embedding_forward(idx, params["wte.weight"], params["wpe.weight"])    # (B, T, C)
    qkv, cache["h.0.attn.c_attn"] = linear_forward(x, params["h.0.attn.c_attn.weight"],
                                                   params["h.0.attn.c_attn.bias"])           # (B, T, 3C)
    x, cache["h.0.attn"] = attention_forward(qkv, config.n_head)                            # (B, T, C)
    if "attn.c_proj" in parts:
        x, cache["h.0.attn.c_proj"] = linear_forward(x, params["h.0.attn.c_proj.weight"],
                                                     params["h.0.attn.c_proj.bias"])         # (B, T, C)
    if "mlp.c_fc" in parts:
        f, cache["h.0.mlp.c_fc"] = linear_forward(x, params["h.0.mlp.c_fc.weight"],
                                                  params["h.0.mlp.c_fc.bias"])               # (B, T, 4C)
        g, cache["h.0.mlp.gelu"] = gelu_forward(f)                                          # (B, T, 4C)
        x, cache["h.0.mlp.c_proj"] = linear_forward(g, params["h.0.mlp.c_proj.weight"],
                                                    params["h.0.mlp.c_proj.bias"])           # (B, T, C)
    logits, cache["lm_head"] = linear_forward(x, params["lm_head.weight"])                  # (B, T, V)
    return logits, cache


def bare_backward(dlogits, cache, parts):
    """dlogits (B, T, V) -> grads, name -> gradient: bare_forward in reverse. Each layer has one input
    and one output here, so each gradient flows down one path: nothing to add up, as the block must."""
    grads = {}
    # forward: logits = x @ lm_head.T
    dx, grads["lm_head.weight"], _ = linear_backward(dlogits, cache["lm_head"])              # (B, T, C)
    if "mlp.c_fc" in parts:
        # forward: x = c_proj(gelu(c_fc(x)))
        dg, grads["h.0.mlp.c_proj.weight"], grads["h.0.mlp.c_proj.bias"] = \
            linear_backward(dx, cache["h.0.mlp.c_proj"])                                   # (B, T, 4C)
        df = gelu_backward(dg, cache["h.0.mlp.gelu"])                                        # (B, T, 4C)
        dx, grads["h.0.mlp.c_fc.weight"], grads["h.0.mlp.c_fc.bias"] = \
            linear_backward(df, cache["h.0.mlp.c_fc"])                                     # (B, T, C)
    if "attn.c_proj" in parts:
        # forward: x = c_proj(x), the heads mixed
        dx, grads["h.0.attn.c_proj.weight"], grads["h.0.attn.c_proj.bias"] = \
            linear_backward(dx, cache["h.0.attn.c_proj"])                                  # (B, T, C)
    # forward: x = attention(c_attn(x))
    dqkv = attention_backward(dx, cache["h.0.attn"])                                         # (B, T, 3C)
    dx, grads["h.0.attn.c_attn.weight"], grads["h.0.attn.c_attn.bias"] = \
        linear_backward(dqkv, cache["h.0.attn.c_attn"])                                    # (B, T, C)
    # forward: x = wte[idx] + wpe[:T]
    grads["wte.weight"], grads["wpe.weight"] = embedding_backward(dx, cache["embed"])
    return grads


# ------------------------------------------------------------------------------------------------
# every rung: forward and backward


def rung_forward(rung, params, config, idx, targets=None, dropout=0.0, rng=None):
    """idx (B, T) ints, targets (B, T) ints or None -> (logits (B, T, V), loss or None, cache).

    dropout and rng: as gpt_forward's, for block and kid (train_step passes DROPOUT's). cache is what
    rung_backward needs.
    """
    B, T = idx.shape
    V = config.vocab_size
    if rung in ("block", "kid"):
        # gpt_forward returns its cache last, after the logits and the loss
        logits, loss, cache = gpt_forward(params, config, idx, targets, dropout=dropout, rng=rng)
        return logits, loss, {"gpt": cache}
    cache = {}
    if rung == "uniform":
        logits = np.zeros((B, T, V))                                                          # (B, T, V)
    elif rung == "bigram":
        # the token embedding alone, V wide, so that a character's row is the next one's logits; no
        # position table (embedding_forward adds one: here, zeros)
        table = params["bigram.weight"]                                                       # (V, V)
        logits, cache["bigram"] = embedding_forward(idx, table, np.zeros((T, V), table.dtype))  # (B, T, V)
    else:
        logits, cache["bare"] = bare_forward(params, config, idx, BARE_PARTS[rung])
    loss = None
    if targets is not None:
        loss, cache["loss"] = cross_entropy_forward(logits, targets)
    return logits, loss, cache


def rung_backward(rung, params, config, cache):
    """rung_forward in reverse, seeded with dloss = 1 -> grads, same keys, order and shapes as params."""
    if rung in ("block", "kid"):
        return gpt_backward(params, config, cache["gpt"])
    if rung == "uniform":
        return {}
    dlogits = cross_entropy_backward(1.0, cache["loss"])                                      # (B, T, V)
    if rung == "bigram":
        grads = {}
        grads["bigram.weight"], _ = embedding_backward(dlogits, cache["bigram"])
    else:
        grads = bare_backward(dlogits, cache["bare"], BARE_PARTS[rung])
    return {name: grads[name] for name in params}


# ------------------------------------------------------------------------------------------------
# training: one step as the kid's trainer takes it, and a whole run


def train_step(rung, params, opt, config, ids, step, lr, seed=1337, batch_size=32, dropout=None,
               betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0):
    """One optimizer step of a rung, on step's batch (batch_rng(seed, step)) -> the batch's loss.

    Updates params and opt (adamw_init's state) in place. dropout None is the rung's own (DROPOUT);
    its masks come from dropout_seed(seed, step), as the kid's trainer draws them. The defaults are the
    kid's trainer's (numpy_gpt.machinery.cli).
    """
    p = DROPOUT.get(rung, 0.0) if dropout is None else dropout
    x, y = get_batch(ids, batch_size, config.block_size, batch_rng(seed, step))              # (B, T) each
    rng = np.random.default_rng(dropout_seed(seed, step)) if p else None
    _, loss, cache = rung_forward(rung, params, config, x, y, p, rng)
    grads = rung_backward(rung, params, config, cache)
    grads, _ = clip_grad_norm(grads, grad_clip)
    adamw_step(params, grads, opt, lr, betas, weight_decay=weight_decay)
    return float(loss)


def train_rung(rung, config, ids_train, steps, seed=1337, dtype=np.float32, batch_size=32, lr=3e-3, min_lr=None,
               warmup_steps=100, **step_settings):
    """Train a rung from init_rung(rung, config, seed, dtype) for `steps` steps -> (params, losses).

    lr: the peak; warmup then cosine decay to min_lr (default lr / 100) at `steps` (numpy_gpt.optim.lr_at).
    step_settings: train_step's dropout, betas, weight_decay and grad_clip. losses: each step's batch loss.
    """
    min_lr = lr / 100 if min_lr is None else min_lr
    params = init_rung(rung, config, seed, dtype)
    opt = adamw_init(params)
    losses = [train_step(rung, params, opt, config, ids_train, step, lr_at(step, lr, min_lr, warmup_steps, steps),
                         seed, batch_size, **step_settings) for step in range(steps)]
    return params, losses


if __name__ == "__main__":
    from .machinery.cli import run_cli
    from .ladder_run import main
    run_cli(main)
