"""The GPT in PyTorch: the same model as numpy_gpt, with the same config, parameter names and init.

Shape key: B batch, T time, C channels, H heads, D head size (C // H), V vocab, L layers.

Attention is written out (scores, causal mask, softmax, weighted sum of the values) beside its fast
path, F.scaled_dot_product_attention, which the model runs unless its `fast` is False; tests and
parity check that the two agree. Where a faster kernel computes the same function on some machine, the
model calls it by name from torch_gpt.kernels, which says where each one pays.

Dropout masks are not drawn here: the trainer draws them with numpy_gpt.model.dropout_masks, from the
same seeded NumPy stream numpy_gpt uses, and passes them in. So both backends drop the same entries.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from numpy_gpt.model import init_params

from . import kernels
from .kernels import Linear     # nn.Linear, on oneDNN's float32 kernels where this CPU has them (kernels.Linear)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)   # q, k, v for all heads at once
        self.c_proj = Linear(config.n_embd, config.n_embd)
        self.fast = True        # F.scaled_dot_product_attention; False runs the attention written out

    def forward(self, x, kv=None):
        """x (B, T, C) -> (B, T, C). kv: where to keep the keys and values (2, B, H, block_size, D), for
        generation, or None."""
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)                    # (B, T, C) each
        q = q.view(B, T, H, D).transpose(1, 2)                      # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)                      # (B, H, T, D)
        v = v.view(B, T, H, D).transpose(1, 2)                      # (B, H, T, D)
        if kv is not None:
            kv[0, :, :, :T], kv[1, :, :, :T] = k, v
        if not self.fast:
            # attention written out: scaled scores, causal mask, softmax, weighted sum of the values
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)                       # (B, H, T, T)
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)    # (T, T) True after t
            att = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)     # (B, H, T, T) rows sum to 1
            y = att @ v                                                             # (B, H, T, D)
        elif x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            y = kernels.causal_products(q, k, v)        # (B, H, T, D) the same, faster under CPU bf16 autocast
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # (B, H, T, D) the same, one kernel
        y = y.transpose(1, 2).reshape(B, T, C)                      # (B, T, C) heads side by side
        return self.c_proj(y)                                       # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        f = self.c_fc(x)                                            # (B, T, 4C)
        g = self.gelu(f)                                            # (B, T, 4C)
        return self.c_proj(g)                                       # (B, T, C)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, masks=(None, None), kv=None):
        """masks: the dropout masks (B, T, C) of the two residual branches, or None for no dropout."""
        a = self.attn(self.ln_1(x), kv)                             # (B, T, C)
        x = x + (a if masks[0] is None else a * masks[0])
        m = self.mlp(self.ln_2(x))                                  # (B, T, C)
        x = x + (m if masks[1] is None else m * masks[1])
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

    def forward(self, idx, targets=None, masks=None, kv=None):
        """idx (B, T), targets (B, T) or None -> (logits (B, T, V), loss or None).

        masks: for training with dropout, the 2 * n_layer masks of numpy_gpt.model.dropout_masks, as
        tensors on the model's device; None (evaluation, sampling, parity) is the model without dropout.
        kv: the KV cache (new_kv_cache) to keep every layer's keys and values in, for generation.
        """
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe.weight[:T]                     # (B, T, C)
        for l, block in enumerate(self.h):
            x = block(x, (None, None) if masks is None else masks[2 * l:2 * l + 2], None if kv is None else kv[l])
        logits = self.lm_head(self.ln_f(x))                         # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
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
        logits, _ = self(idx, kv=kv)
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
