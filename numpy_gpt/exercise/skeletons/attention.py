"""Level 1: causal self-attention's forward, in NumPy. Fill in the TODOs, then grade it:

    python -m numpy_gpt.exercise check my_attention.py

Shape key: B batch, T time, C channels, H heads, D head size (C // H).

Attention lets each position look back at the positions before it and take a weighted mix of what
they hold. Every position makes three vectors from its channels: a query q (what it looks for), a
key k (what it offers to be found by) and a value v (what it hands over). In each head, position i
scores every position j by the dot product q_i . k_j, scaled by 1/sqrt(D) so the scores keep a
variance near 1 whatever the head size. Positions after i are the future, which the model must not
see when it predicts the character after i: their scores become -inf. A softmax over each row turns
the scores into weights that are positive and sum to 1, and the output of position i is the
weighted sum of the values. The H heads do this side by side on their own D channels each.

The grader compares your y with numpy_gpt.layers.attention_forward, in float64, and tells you which
property fails first when they differ.
"""
import math

import numpy as np


def attention_forward(qkv, n_head):
    """qkv (B, T, 3C): the queries, keys and values of every position, side by side along the last axis
    (the output of the layer c_attn), q first, then k, then v. Within each, head h owns channels
    h*D .. (h+1)*D - 1.

    -> y (B, T, C): the heads' outputs, side by side in the same order, and cache: what a backward would
    need (this level has none to write: return None, or (q, k, v, att, scale) as numpy_gpt does).

    Do not change qkv in place: the model uses it again.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    H = n_head
    D = C // H

    # 1. Cut qkv into q, k and v, each (B, T, C), and each of those into its heads: (B, T, C) ->
    #    (B, T, H, D) -> (B, H, T, D), so that the last two axes of one head are a (T, D) matrix.
    q = None                                    # TODO (B, H, T, D)
    k = None                                    # TODO (B, H, T, D)
    v = None                                    # TODO (B, H, T, D)

    # 2. The scores: scores[b, h, i, j] = q_i . k_j / sqrt(D), for every query i and key j.
    #    k.transpose(0, 1, 3, 2) is (B, H, D, T).
    scores = None                               # TODO (B, H, T, T)

    # 3. The causal mask: position i may look at keys j <= i only. Set the scores of the future
    #    (j > i) to -inf, so the softmax gives them weight 0. np.triu(np.ones((T, T), bool), k=1) is
    #    True exactly there.
    scores = scores                             # TODO (B, H, T, T)

    # 4. The softmax over the keys (the last axis), so each query's row of weights sums to 1.
    #    Subtract each row's max first: exp(-inf) is 0, and exp never overflows.
    att = None                                  # TODO (B, H, T, T)

    # 5. The weighted sum of the values, then the heads back side by side:
    #    (B, H, T, D) -> (B, T, H, D) -> (B, T, C).
    y = None                                    # TODO (B, T, C)

    return y, None
