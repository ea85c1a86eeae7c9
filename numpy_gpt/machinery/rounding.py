"""The error model behind every float comparison of two computations of the kid: how far two correct
backends (numpy_gpt and torch_gpt, or two CPUs' kernels) may differ, derived from the unit roundoff and
the number of roundings, for one forward and backward, one AdamW step, and a run of many steps.

The measure, per tensor: max |a - b| / max(max |b|, FLOOR), the largest difference relative to the
tensor's own scale (its largest entry). parity.compare uses it, with these bars; so do the tests. No
torch here: numpy_gpt's exercise grader uses the model too.
"""
import math

import numpy as np

from ..config import GPTConfig

# The error model behind the tolerances. A sum of n terms in which each addition and product
# rounds with an independent zero-mean error of at most u (the unit roundoff) errs by more than
# lambda sqrt(n) u sum|term| with probability at most 2 n exp(-lambda^2 (1 - u)^2 / 2) (Higham and Mary,
# "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41, 2019, Theorem
# 2.4). LAMBDA = 8 makes that 4e-10 for n = 15,000. The worst-case bound, n u sum|term| (Higham,
# Accuracy and Stability of Numerical Algorithms, 3.1), holds for any errors but grows with n.
LAMBDA = 8


def gamma_tilde(n, u, lam=LAMBDA):
    """The probabilistic bound on the relative error of n roundings: exp(lambda sqrt(n) u + n u^2 / (1 - u))
    - 1, which is lambda sqrt(n) u to first order (Higham and Mary, Theorem 2.4)."""
    return math.expm1(lam * math.sqrt(n) * u + n * u * u / (1 - u))


def path_roundings(config, T=None):
    """How many roundings one entry of an activation or gradient can pass through, at most: every sum and
    elementwise operation from the input to the loss (the forward) and back (the backward, whose sums
    have the forward's lengths, transposed), one rounding per term a sum adds.

    Per block, forward: two LayerNorms (a mean and a variance over C, then 4 elementwise operations),
    the products c_attn (C terms), q k^T (D), att v (T) and c_proj (C), the softmax (its sum over T and
    3 elementwise), c_fc (C), GELU (8 elementwise) and the MLP's c_proj (4C), two residual additions.
    After the blocks: ln_f, lm_head (C terms), the cross-entropy (a sum over V and 4 elementwise).
    The backward doubles it. The kid: 14,650."""
    C, V, D, L = config.n_embd, config.vocab_size, config.n_embd // config.n_head, config.n_layer
    T = T or config.block_size
    layernorm = 2 * C + 4
    block = 2 * layernorm + C + D + T + C + (T + 3) + C + 8 + 4 * C + 2
    return 2 * (L * block + layernorm + C + V + 4)


# Tolerances on the measure above, derived from that model. Each backend's entry lies within
# gamma_tilde(n, u) sum|term| of the exact value, n being the roundings of the kid's longest path
# (path_roundings: 14,650) plus its gradients' final sums over the B T = 512 positions of parity's batch:
# 15,162. Two backends differ by twice that, on the measure above where a tensor's largest entry is not
# itself small by cancellation (sum|term| of the order of the entry). The configurations the tests draw
# are smaller than the kid, with fewer roundings; tests/test_parity.py skips the draws where the premise
# fails (well_conditioned there: numpy_gpt's float32 misses its own float64 by more than one
# float32 computation of that config may), and
# tests/test_ddp.py bounds gradients entry by entry on sum|term| itself. A real mistake (a missing term,
# a wrong scale) shows up at 1e-3 or more.
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24}


def tolerance(config, positions, dtype="float64"):
    """Two backends' bar for one forward and backward of config over a batch of `positions` positions:
    twice the probabilistic bound of the longest path's roundings plus the gradients' final sums."""
    return 2 * gamma_tilde(path_roundings(config) + positions, UNIT_ROUNDOFF[dtype])


KID_ROUNDINGS = path_roundings(GPTConfig()) + 4 * GPTConfig().block_size
TOLERANCE = {
    "float64": tolerance(GPTConfig(), 4 * GPTConfig().block_size, "float64"),      # u = 2^-53: 2.2e-13
    "float32": tolerance(GPTConfig(), 4 * GPTConfig().block_size, "float32"),      # u = 2^-24: 1.2e-4
}
# A run of many steps has no bar that can be written down in advance. AdamW divides each gradient by its
# own running size, so how far one step carries a difference into the next depends on the run: an entry
# whose gradient is within rounding of zero (the key bias, whose true gradient is exactly zero) moves by
# up to lr times its rounding / eps a step. So the bar is the error model run forward (Shadow): numpy_gpt
# trains once more, and each step of that run carries the largest errors that two correct backends may
# make in a step: every gradient entry moved by TOLERANCE of its tensor's largest entry (before clipping,
# so the clipping factor carries its share), every parameter after the update by UPDATE_ROUNDINGS
# roundings of its tensor's largest, each in a random direction.
# The backends' real errors are modelled as Higham and Mary model roundings: each no larger than the
# shadow's, zero-mean, independent of what came before. To first order their difference at the end is a
# sum of carried-forward terms, each bounded by the shadow's matching term, so by the Azuma-Hoeffding
# inequality each entry lies within LAMBDA times that sum's root-mean-square size but with probability
# 2 exp(-LAMBDA^2 / 2) = 2.5e-14. The shadow's distance is one draw of the sum, not its root-mean-square,
# and one number can fall well below it, so LAMBDA times the shadow's largest distance over a tensor
# (run_tolerance) carries no guaranteed probability. It holds because a tensor's largest distance over
# many entries is rarely far below the largest root-mean-square, each loss also gets one forward's
# rounding, and real roundings stay far under the model's bounds (docs/parity.md measures the margins,
# all under 1e-3 of the bars). The premise of TOLERANCE, that a gradient's largest entry is not itself
# small by cancellation, is taken for every step of the run.
SHADOW_SEED = 0x5AD0
# One AdamW step compares the updates p1 - p0 on the update's own scale (see compare_updates). Each
# backend rounds at the parameter's scale up to three times (the decay factor 1 - lr*wd, the decayed
# parameter, the updated one), each within u|p| for u the unit roundoff, so two correct steps can differ
# by 6u max|p| in the update, whatever its size. The allowance is 8u max|p|: in float32, at the first
# step's lr of 3e-5, that is 1.6e-2 of the update for a LayerNorm gain of 1 and 1.6e-3 for a weight of
# 0.1, while weight decay left out shifts the update by lr*wd*max|p| = 6.25 times the allowance (always:
# lr*wd / 8u), and a 30% error in the update by 0.3.
UPDATE_ROUNDINGS = 8
FLOOR = 1e-30    # the absolute floor of the scale: only an all-zero tensor ever reaches it


class Shadow:
    """The error model of a run of many steps (see SHADOW_SEED), for numpy_gpt's run to carry: gradients()
    moves every gradient entry by TOLERANCE of its tensor's largest entry, after_step() every parameter by
    UPDATE_ROUNDINGS roundings of its tensor's largest, each in a direction drawn at random from seed.
    tol: the gradients' bar, TOLERANCE (the kid, at parity's batch) unless given (tolerance())."""

    def __init__(self, dtype="float64", seed=SHADOW_SEED, tol=None):
        self.tol, self.unit = TOLERANCE[dtype] if tol is None else tol, UNIT_ROUNDOFF[dtype]
        self.rng = np.random.default_rng(seed)

    def signs(self, shape):
        return 2.0 * self.rng.integers(0, 2, shape) - 1.0

    def gradients(self, grads):
        return {n: g + self.tol * np.abs(g).max() * self.signs(g.shape) for n, g in grads.items()}

    def after_step(self, params):
        for p in params.values():
            p += UPDATE_ROUNDINGS * self.unit * np.abs(p).max() * self.signs(p.shape)


def run_tolerance(ref, shadow, scale):
    """The bar of a tensor of a run (see SHADOW_SEED): LAMBDA max|shadow - ref|, on the measure's scale
    max(max|scale|, FLOOR). ref: numpy_gpt's run, shadow: the same run carrying the error model's errors."""
    spread = float(np.abs(np.asarray(shadow, dtype=np.float64) - np.asarray(ref, dtype=np.float64)).max())
    return LAMBDA * spread / max(float(np.abs(np.asarray(scale, dtype=np.float64)).max()), FLOOR)


def loss_tolerance(loss, max_logit, dtype="float64", tol=None):
    """How far two backends' losses of one forward may differ: a position's loss, log-sum-exp(z) - z_target,
    moves by at most twice the largest change of a logit, and two backends' logits differ by at most
    TOLERANCE of the largest |logit|; the loss's own roundings are at the scale of its two terms, at most
    |loss| + 2 max|z| together, so two backends' differ by TOLERANCE of that. -> TOLERANCE (|loss| + 4 max|z|),
    or tol in its place."""
    return (TOLERANCE[dtype] if tol is None else tol) * (abs(loss) + 4 * max_logit)
