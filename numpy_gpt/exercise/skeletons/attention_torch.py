"""Level 1 in PyTorch: causal self-attention as a module, as the kid's torch_gpt has it. __init__ is
given; write forward, then grade it:

    python -m numpy_gpt.exercise check my_attention_torch.py

Shape key: B batch, T time, C channels, H heads, D head size (C // H).

Attention lets each position look back at the positions before it and take a weighted mix of what
they hold. Every position makes three vectors from its channels: a query q (what it looks for), a
key k (what it offers to be found by) and a value v (what it hands over). In each head, position i
scores every position j by the dot product q_i . k_j, scaled by 1/sqrt(D) so the scores keep a
variance near 1 whatever the head size. Positions after i are the future, which the model must not
see when it predicts the character after i: their scores become -inf. A softmax over each row turns
the scores into weights that are positive and sum to 1, and the output of position i is the
weighted sum of the values. The H heads do this side by side on their own D channels each.

Write it with plain tensor operations (F.scaled_dot_product_attention does all of it in one call:
that is the one thing not to use here). The grader runs your module in float64 on weights it
chooses and compares it with numpy_gpt.layers.attention_forward; autograd gives the backward.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)   # q, k, v of all heads in one product
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)       # mixes the heads' outputs

    def forward(self, x):
        """x (B, T, C) -> (B, T, C)"""
        B, T, C = x.shape
        H = self.n_head
        D = C // H
        qkv = self.c_attn(x)                    # (B, T, 3C): q, then k, then v; head h owns h*D..(h+1)*D-1 of each

        # 1. Cut qkv into q, k and v (qkv.split(C, dim=2)), each (B, T, C), and each of those into
        #    its heads: .view(B, T, H, D).transpose(1, 2) -> (B, H, T, D).
        q = None                                # TODO (B, H, T, D)
        k = None                                # TODO (B, H, T, D)
        v = None                                # TODO (B, H, T, D)

        # 2. The scores: scores[b, h, i, j] = q_i . k_j / sqrt(D). k.transpose(-2, -1) is (B, H, D, T).
        scores = None                           # TODO (B, H, T, T)

        # 3. The causal mask: query i may look at keys j <= i only. Fill the future (j > i) with
        #    -inf: torch.ones(T, T, dtype=torch.bool).triu(1) is True exactly there (masked_fill).
        scores = scores                         # TODO (B, H, T, T)

        # 4. The softmax over the keys (the last axis), so each query's row of weights sums to 1.
        att = None                              # TODO (B, H, T, T)

        # 5. The weighted sum of the values, then the heads back side by side:
        #    (B, H, T, D) -> (B, T, H, D) -> (B, T, C) (.transpose(1, 2).reshape(B, T, C)).
        y = None                                # TODO (B, T, C)

        return self.c_proj(y)                   # (B, T, C)
