"""parity: numpy_gpt and torch_gpt agree on every activation, gradient and update, and a planted bug is
caught and named."""
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import numpy_gpt.model
import parity.compare as pc
import torch
import torch_gpt.train
from numpy_gpt import GPTConfig
from numpy_gpt.machinery.rounding import gamma_tilde, path_roundings
from parity.__main__ import main as parity_main

from bounds import record_margin
from conftest import ROOT
from test_numpy_cli import SMALL, run


@st.composite
def configs(draw):
    """1 to 3 layers, n_head dividing n_embd, small vocabularies, T <= block_size.

    n_embd is at least 3. LayerNorm over one channel outputs its bias whatever the input, and over two
    it outputs +-1/sqrt(1 + eps/d^2) for d half the channels' difference: almost constant. The
    gradient through it is then exactly zero, or ~eps/d^2 of the terms it is the difference of, and
    comparing roundings of that on the tensor's own scale measures cancellation, not the backends.
    From 3 up, both parity properties skip the draws where a tensor still cancels (well_conditioned).
    """
    n_head = draw(st.integers(1, 4))
    n_embd = n_head * draw(st.integers(-(-3 // n_head), 8))     # the smallest head size giving n_embd >= 3
    config = GPTConfig(vocab_size=draw(st.integers(2, 20)), block_size=draw(st.integers(1, 16)),
                       n_layer=draw(st.integers(1, 3)), n_head=n_head, n_embd=n_embd)
    return config, draw(st.integers(1, config.block_size)), draw(st.integers(1, 4))


def random_weights(config, rng, dtype):
    """Weights far from the init: every parameter, LayerNorm gains and biases included, random."""
    return {name: (rng.standard_normal(shape) * (0.2 if len(shape) == 2 else 0.5)
                   + (1.0 if len(shape) == 1 and name.endswith("weight") else 0.0)).astype(dtype)
            for name, shape in numpy_gpt.model.param_shapes(config).items()}


def both(config, T, B, seed, dtype):
    np_dtype, torch_dtype = pc.DTYPES[dtype]
    rng = np.random.default_rng(seed)
    params = random_weights(config, rng, np_dtype)
    x, y = pc.make_batch(config, seed, B, T)
    acts, grads = pc.numpy_forward_backward(params, config, x, y)
    t_acts, t_grads, t_fast = pc.torch_forward_backward(pc.torch_model(params, config, torch_dtype), x, y)
    tol = pc.TOLERANCE[dtype]
    return (pc.compare_dicts("", acts, t_acts, tol) + pc.compare_dicts("grad ", grads, t_grads, tol)
            + pc.compare_dicts("fast grad ", grads, t_fast, tol)), params, grads


def well_conditioned(config, T, B, seed, params32):
    """Whether the draw meets the premise of parity's tolerances: no tensor's largest entry is itself small
    by cancellation, so that rounding errors on the tensor's terms are of the order of the tensor.

    Some tiny random configs break it: attention over one key, whose gradient to the scores is exactly
    zero, computed as a difference of equal values, so the query and key gradients are rounding noise;
    LayerNorm over three channels, nearly constant. How ill-conditioned a tensor is belongs to the draw,
    not to the precision or the backend, so numpy_gpt alone finds out: its float32 result must lie within
    one float32 computation's bound for this config (parity.compare.gamma_tilde over its roundings) of
    its own float64 result, on the same weights (params32, float32 values). No difference between the
    backends can pass or fail this."""
    x, y = pc.make_batch(config, seed, B, T)
    (acts32, grads32), (acts64, grads64) = (pc.numpy_forward_backward(p, config, x, y)
                                            for p in (params32, {k: v.astype(np.float64) for k, v in params32.items()}))
    own_error = pc.compare_dicts("", acts32, acts64, 1) + pc.compare_dicts("", grads32, grads64, 1)
    return max(r.max_rel for r in own_error) <= gamma_tilde(path_roundings(config, T) + B * T, 2.0 ** -24)


@settings(max_examples=25, deadline=None)
@given(configs(), st.integers(0, 2**32 - 1))
def test_float64_parity_property(case, seed):
    """float64 parity at parity.compare's derived tolerance, on the draws that meet its premise
    (well_conditioned): the others run the same code, on a tensor that is rounding noise."""
    config, T, B = case
    rows, params, _ = both(config, T, B, seed, "float64")
    assert len(rows) == 13 * config.n_layer + 4 + 2 * len(params)     # every activation and gradient
    assume(well_conditioned(config, T, B, seed, {k: v.astype(np.float32) for k, v in params.items()}))
    record_margin("test_float64_parity_property", max(r.max_rel / r.tol for r in rows), "every tensor")
    bad = [(r.name, r.max_rel) for r in rows if not r.ok]
    assert not bad, bad


@settings(max_examples=15, deadline=None)
@given(configs(), st.integers(0, 2**32 - 1))
def test_float32_parity_property(case, seed):
    """float32 parity at parity.compare's derived tolerance, on the draws that meet its premise
    (well_conditioned): the others run the same code, on a tensor that is rounding noise."""
    config, T, B = case
    rows, params, grads = both(config, T, B, seed, "float32")
    assume(well_conditioned(config, T, B, seed, params))
    record_margin("test_float32_parity_property", max(r.max_rel / r.tol for r in rows), "every tensor")
    bad = [(r.name, r.max_rel) for r in rows if not r.ok]
    assert not bad, bad


def float32_errors(config, T, B, seed):
    """-> rows of numpy_gpt's float32 result against its own float64 one, every activation and gradient,
    each with the tolerance TOLERANCE["float32"] / 2 + lambda sqrt(n) s (parity.compare's error model).

    s is the draw's sensitivity: how far the float64 result moves, on the same measure, when every
    weight moves by one float32 rounding (relative u = 2^-24, random signs). A float32 computation is
    the exact one on inputs moved by its roundings: n of them along a path (path_roundings, plus the
    final sums over the B T positions), which together move it, with the probability of parity.compare's
    LAMBDA, by at most lambda sqrt(n) times one rounding's move. s is large where a tensor is the small
    difference of large terms (a LayerNorm bias gradient summed over a few positions), which is where
    float32 loses digits. A layer computed in float16, whose rounding is 8,000 times float32's, misses
    by 1,000 s and more.
    """
    rng = np.random.default_rng(seed)
    params32 = random_weights(config, rng, np.float32)
    params64 = {k: v.astype(np.float64) for k, v in params32.items()}
    u = np.finfo(np.float32).eps / 2
    nudged = {k: v * (1 + u * rng.choice([-1.0, 1.0], v.shape)) for k, v in params64.items()}
    x, y = pc.make_batch(config, seed, B, T)
    results = [pc.numpy_forward_backward(p, config, x, y) for p in (params32, params64, nudged)]
    (acts32, grads32), (acts64, grads64), (acts_s, grads_s) = results
    sensitivity = {r.name: r.max_rel for r in pc.compare_dicts("", acts_s, acts64, 0)
                   + pc.compare_dicts("grad ", grads_s, grads64, 0)}
    rows = pc.compare_dicts("", acts32, acts64, 0) + pc.compare_dicts("grad ", grads32, grads64, 0)
    amplification = pc.LAMBDA * np.sqrt(path_roundings(config, T) + B * T)
    for r in rows:
        r.tol = pc.TOLERANCE["float32"] / 2 + amplification * sensitivity[r.name]
    return rows


@settings(max_examples=25, deadline=None)
@given(configs(), st.integers(0, 2**32 - 1))
def test_numpy_float32_stays_near_its_own_float64_property(case, seed):
    """The parity properties skip draws where numpy_gpt's float32 misses its float64 by more than its
    bound (well_conditioned): a float32 regression in numpy_gpt would be skipped there, not failed. This
    fails it, on every draw."""
    rows = float32_errors(*case, seed)
    assert len(rows) == 13 * case[0].n_layer + 4 + len(numpy_gpt.model.param_shapes(case[0]))
    bad = [(r.name, r.max_rel, r.tol) for r in rows if not r.ok]
    assert not bad, bad


def test_a_float32_regression_in_numpy_gpt_is_caught(monkeypatch):
    """Planted: GELU's output rounded to float16 when the model runs in float32 (float64 untouched)."""
    real = numpy_gpt.model.gelu_forward

    def gelu_forward_float16(x):
        out, cache = real(x)
        return (out.astype(np.float16).astype(out.dtype) if out.dtype == np.float32 else out), cache

    monkeypatch.setattr(numpy_gpt.model, "gelu_forward", gelu_forward_float16)
    config = GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=8)
    rows = float32_errors(config, 8, 2, 5)
    failed = {r.name for r in rows if not r.ok}
    assert {"h.0.mlp.gelu", "h.1.mlp.gelu", "logits", "grad h.0.mlp.c_fc.weight"} <= failed
    assert max(r.max_rel / r.tol for r in rows) > 2            # a bar twice as wide would still catch it


def test_optimizer_step_parity_with_clipping():
    config = GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=8)
    params = random_weights(config, np.random.default_rng(1), np.float64)
    x, y = pc.make_batch(config, 1, 3)
    _, grads = pc.numpy_forward_backward(params, config, x, y)
    p1, t_p1, norm = pc.optimizer_step_both(params, config, grads, lr=1e-2, torch_dtype=pc.DTYPES["float64"][1])
    assert norm > pc.DEFAULTS.grad_clip, "the clipping must engage for this test to mean something"
    rows = pc.compare_dicts("", p1, t_p1, pc.TOLERANCE["float64"])
    assert all(r.ok for r in rows), [(r.name, r.max_rel) for r in rows if not r.ok]
    assert not np.array_equal(p1["h.0.mlp.c_fc.weight"], params["h.0.mlp.c_fc.weight"])


def adamw_without_weight_decay(params, grads, state, lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1):
    """Planted bug: numpy_gpt's AdamW with the decoupled weight decay left out."""
    REAL_ADAMW_STEP(params, grads, state, lr, betas, eps, weight_decay=0.0)


def adamw_30_percent_too_far(params, grads, state, lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1):
    """Planted bug: numpy_gpt's AdamW with every update 30% too large."""
    before = {name: p.copy() for name, p in params.items()}
    REAL_ADAMW_STEP(params, grads, state, lr, betas, eps, weight_decay)
    for name, p in params.items():
        p += 0.3 * (p - before[name])


REAL_ADAMW_STEP = pc.adamw_step
ONE_STEP = "the update of one AdamW step"
SMALL_CONFIG = GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=16)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bug", [None, adamw_without_weight_decay, adamw_30_percent_too_far])
def test_one_step_section_catches_a_wrong_update(monkeypatch, dtype, bug):
    """At the first step's lr (3e-5) the update is ~3e-5 of a LayerNorm gain of 1: on the parameters'
    scale, weight decay left out (3e-6 of a parameter) passed float32's tolerance, and a 30% error in a gain's
    update too. On the update's scale both fail, in float32 and float64, and only in this section."""
    if bug:
        monkeypatch.setattr(pc, "adamw_step", bug)
    report = pc.run_parity(dtype=dtype, steps=0, config=SMALL_CONFIG)
    rows = dict(report.sections)
    title, = [t for t in rows if t.startswith(ONE_STEP)]
    failed = {r.name.removeprefix("update ") for r in rows[title] if not r.ok}
    params = pc.init_params(SMALL_CONFIG, 0, np.float64)
    if bug is None:
        assert report.ok, [(r.name, r.max_rel, r.tol) for r in report.rows() if not r.ok]
    elif bug is adamw_without_weight_decay:
        assert failed == {n for n, p in params.items() if p.ndim == 2}      # the decayed tensors, and only they
    else:
        assert failed == set(params)
    assert all(r.ok for t, section in rows.items() if t != title for r in section)


TRAINER = {name: getattr(torch_gpt.train, name)
           for name in ("make_optimizer", "optimizer_step", "accumulate_gradients")}


def optimizer_decaying_everything(model, args, device):
    """A drifted trainer: weight decay on the biases and LayerNorm too."""
    return torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8,
                             weight_decay=args.weight_decay)


def step_without_clipping(model, optimizer, lr, grad_clip):
    """A drifted trainer: the gradient norm no longer clipped."""
    TRAINER["optimizer_step"](model, optimizer, lr, 0.0)


def gradients_without_dropout(model, batches, autocast, world):
    """A drifted trainer: the dropout masks dropped."""
    return TRAINER["accumulate_gradients"](model, [(x, y, None) for x, y, _ in batches], autocast, world)


@pytest.mark.parametrize("name, drift", [(None, None), ("make_optimizer", optimizer_decaying_everything),
                                         ("optimizer_step", step_without_clipping),
                                         ("accumulate_gradients", gradients_without_dropout)])
def test_parity_runs_the_torch_trainers_own_step(monkeypatch, name, drift):
    """Parity steps torch_gpt with torch_gpt.train's own functions, so a trainer that drifts from
    numpy_gpt's update fails it (a restated copy of the step would go on passing)."""
    if drift:
        monkeypatch.setattr(torch_gpt.train, name, drift)
    config = GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=8)
    params = random_weights(config, np.random.default_rng(1), np.float64)
    x, y = pc.make_batch(config, 1, 3)
    _, grads = pc.numpy_forward_backward(params, config, x, y)
    p1, t_p1, norm = pc.optimizer_step_both(params, config, grads, 1e-3, torch.float64)
    assert norm > pc.DEFAULTS.grad_clip, "the clipping must engage for this test to mean something"
    batches = [pc.make_batch(config, 10 + s, 3) for s in range(4)]
    numpy_gpts, torch_gpts = pc.train_both(params, config, batches, pc.schedule(4), torch.float64, dropout=0.1, seed=2)
    shadow = pc.numpy_run(params, config, batches, pc.schedule(4), dropout=0.1, seed=2, shadow=pc.Shadow())
    rows = (pc.compare_updates("update ", params, p1, t_p1, pc.TOLERANCE["float64"])
            + pc.compare_run("step4 ", numpy_gpts.params, torch_gpts.params, numpy_gpts.params, shadow.params)
            + pc.compare_losses("loss ", numpy_gpts.losses, torch_gpts.losses, numpy_gpts.losses, shadow.losses,
                                numpy_gpts.logits))
    failed = [r.name for r in rows if not r.ok]
    assert bool(failed) == bool(drift), failed


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_trajectory_50_steps_float64(dropout):
    """50 full training steps in both backends, with and without dropout (the same masks in both): every
    loss and every parameter within the bar the shadow run sets (numpy_gpt.machinery.rounding.SHADOW_SEED). The bar is
    no blanket: a run whose learning rate is 0.001% off, everything else the same, falls outside it."""
    config = GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16)
    params = pc.init_params(config, 5, np.float64)
    batches = [pc.make_batch(config, 100 + s, 4) for s in range(50)]
    numpy_gpts, torch_gpts = pc.train_both(params, config, batches, pc.schedule(50), torch.float64, dropout, seed=3)
    shadow = pc.numpy_run(params, config, batches, pc.schedule(50), dropout, seed=3, shadow=pc.Shadow())
    assert numpy_gpts.losses[-1] < numpy_gpts.losses[0] - 0.1, "the run must actually train"

    def rows(run):
        return (pc.compare_losses("loss ", numpy_gpts.losses, run.losses, numpy_gpts.losses, shadow.losses,
                                  numpy_gpts.logits)
                + pc.compare_run("", numpy_gpts.params, run.params, numpy_gpts.params, shadow.params))
    got = rows(torch_gpts)
    assert all(r.ok for r in got), [(r.name, r.max_rel, r.tol) for r in got if not r.ok]
    assert max(r.max_rel for r in got) > 0, "bit-equal would mean the two backends were not both run"
    record_margin("test_trajectory_50_steps_float64", max(r.margin for r in got),
                  f"every loss and tensor, dropout {dropout}")
    schedule = pc.schedule(50)
    off = pc.numpy_run(params, config, batches, lambda step: schedule(step) * (1 + 1e-5), dropout, seed=3)
    assert not all(r.ok for r in rows(off)), "a learning rate 0.001% off must fail the bars"


def buggy_layernorm_backward(dout, cache):
    """A copy of layernorm_backward with term 3 (the path through the variance) dropped."""
    xhat, rstd, w = cache
    C = xhat.shape[-1]
    lead = tuple(range(dout.ndim - 1))
    dxhat = dout * w
    dx = rstd * (dxhat - dxhat.sum(axis=-1, keepdims=True) / C)
    return dx, (dout * xhat).sum(axis=lead), dout.sum(axis=lead)


def test_planted_layernorm_bug_is_caught_and_named(monkeypatch):
    """The bug enters at ln_f's dx: every gradient upstream of ln_f must fail, and nothing else."""
    monkeypatch.setattr(numpy_gpt.model, "layernorm_backward", buggy_layernorm_backward)
    config = GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=8)
    rows, params, _ = both(config, 8, 2, 3, "float64")
    failed = {r.name for r in rows if not r.ok}
    downstream = {"lm_head.weight", "ln_f.weight", "ln_f.bias"}
    expected = {f"{prefix}grad {n}" for prefix in ("", "fast ") for n in params if n not in downstream}
    assert failed == expected
    assert min(r.max_rel for r in rows if not r.ok) > 1e-6          # caught by a wide margin


def test_one_perturbed_gradient_is_reported_alone(monkeypatch):
    """A relative error of 1e-9 in one element of one gradient: that tensor, and only it, fails."""
    real = pc.gpt_backward

    def perturbed(params, config, cache):
        grads = real(params, config, cache)
        grads["h.1.mlp.c_fc.bias"] = grads["h.1.mlp.c_fc.bias"].copy()
        grads["h.1.mlp.c_fc.bias"][3] *= 1 + 1e-9
        return grads

    monkeypatch.setattr(pc, "gpt_backward", perturbed)
    config = GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=8)
    rows, _, _ = both(config, 8, 2, 4, "float64")
    assert {r.name for r in rows if not r.ok} == {"grad h.1.mlp.c_fc.bias", "fast grad h.1.mlp.c_fc.bias"}


def test_cli_exits_nonzero_and_names_the_tensor_on_a_mismatch(monkeypatch, capsys):
    monkeypatch.setattr(numpy_gpt.model, "layernorm_backward", buggy_layernorm_backward)
    assert parity_main(["--steps", "0"]) == 1
    out = capsys.readouterr().out
    assert "FAIL:" in out and "grad h.0.ln_1.weight" in out and "| grad lm_head.weight" in out


# The trajectory runs in float64 whatever --dtype says, so the float32 run leaves it to the float64 one.
@pytest.mark.parametrize("dtype, steps", [("float64", "50"), ("float32", "0")])
def test_cli_passes_on_the_kid(dtype, steps):
    result = run("-m", "parity", "--dtype", dtype, "--steps", steps)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "\nPASS: all" in result.stdout and "## the update of one AdamW step" in result.stdout
    worst = re.search(r"at ([0-9.e+-]+) \(tolerance ([0-9.e+-]+)\)", result.stdout)
    record_margin("test_cli_passes_on_the_kid", float(worst[1]) / float(worst[2]), f"{dtype}, the closest tensor")
    assert ("## trajectory: 50 steps, float64" in result.stdout) == (steps == "50")
    assert result.stdout.count("| ok |") > (250 if steps == "50" else 200)


def test_cli_help():
    result = run("-m", "parity", "--help")
    assert result.returncode == 0
    assert all(f in result.stdout for f in ("--checkpoint", "--dtype", "--steps", "--seed"))


def test_parity_on_a_trained_checkpoint(small_text, tmp_path):
    out = tmp_path / "run"
    trained = run("-m", "torch_gpt.train", "--device", "cpu", "--data", str(small_text), "--out", str(out),
                  *SMALL, "--steps", "60", "--eval-interval", "60", "--lr", "1e-2")
    assert trained.returncode == 0, trained.stderr
    result = run("-m", "parity", "--checkpoint", str(out / "kid.npz"), "--steps", "20")
    assert result.returncode == 0 and "\nPASS: all" in result.stdout, result.stdout[-3000:]


KID = ROOT / "out" / "kid.npz"


@pytest.mark.skipif(not KID.exists(), reason="no trained kid at out/kid.npz (python -m torch_gpt.train makes one)")
def test_parity_on_the_trained_kid():
    for dtype in ("float64", "float32"):
        result = run("-m", "parity", "--checkpoint", str(KID), "--dtype", dtype, "--steps", "10")
        assert result.returncode == 0 and "\nPASS: all" in result.stdout, result.stdout[-3000:]
