"""Level 2: causal self-attention's backward, in NumPy: the hardest gradient in the model. The forward
is given, copied from numpy_gpt/layers.py; write attention_backward, then grade it:

    python -m numpy_gpt.exercise check my_attention_backward.py

Shape key: B batch, T time, C channels, H heads, D head size (C // H).

The backward runs the forward's lines in reverse. For each line out = f(in), it turns the gradient
of the loss with respect to out (d<out>) into the gradient with respect to in (d<in>). The grader
compares your dq, dk and dv with centered finite differences of the forward and with
numpy_gpt.layers.attention_backward, in float64, and names the likely culprit when one is wrong.
"""
import numpy as np

# ------------------------------------------------------------------------------------------------
# given: the forward, numpy_gpt.layers.attention_forward (split_heads and merge_heads move between
# (B, T, C) and (B, H, T, D)). Its cache is (q, k, v, att, scale).

# <numpy_gpt.layers.attention_forward>

# ------------------------------------------------------------------------------------------------
# yours


def attention_backward(dy, cache):
    """dy (B, T, C), the gradient of the loss with respect to y -> dqkv (B, T, 3C): dq, dk and dv side
    by side, as q, k and v sit in qkv.

    Do not change dy in place: the model uses it again.
    """
    q, k, v, att, scale = cache                 # (B, H, T, D) x 3, (B, H, T, T), a float
    H = q.shape[1]
    dy = split_heads(dy, H)                     # (B, H, T, D), a view: dy itself is not changed

    # 1. forward: y = att @ v. Two gradients: datt (B, H, T, T) and dv (B, H, T, D).
    #    Each comes from the other factor and dy: check the shapes to see which needs a transpose.
    datt = None                                 # TODO (B, H, T, T)
    dv = None                                   # TODO (B, H, T, D)

    # 2. forward: att = softmax(scores), over each row (the last axis). For one row,
    #    dscores_j = sum_i datt_i * d att_i / d scores_j, and d att_i / d scores_j = att_i (1[i = j] - att_j).
    #    Work it into two terms: the row's own entry, and one through the softmax's normalising sum.
    #    The mask's -inf scores have att = 0, so their gradient comes out 0 by itself.
    dscores = None                              # TODO (B, H, T, T)

    # 3. forward: scores = (q * scale) @ k^T. Two gradients: dq and dk (B, H, T, D). The scale is a
    #    constant: it multiplies both.
    dq = None                                   # TODO (B, H, T, D)
    dk = None                                   # TODO (B, H, T, D)

    # 4. The heads back side by side, and the three gradients as q, k, v sit in qkv:
    #    merge_heads turns (B, H, T, D) into (B, T, C); np.concatenate along the last axis.
    dqkv = None                                 # TODO (B, T, 3C)
    return dqkv
