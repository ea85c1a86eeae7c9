"""The ladder (numpy_gpt/ladder.py): every rung's whole-model gradient against finite differences, its
parameters, the kid rung as the kid's own model and trainer, and python -m numpy_gpt.ladder as a user runs it."""
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import numpy_gpt.ladder as ladder
from numpy_gpt import GPTConfig, gpt_backward, gpt_forward, init_params, num_params
from numpy_gpt.data import CharTokenizer, batch_rng, get_batch, split_train_val
from numpy_gpt.layers import gelu_backward
from numpy_gpt.ladder import (RUNGS, init_rung, rung_backward, rung_config, rung_forward, rung_param_shapes,
                              train_rung, train_step)
from numpy_gpt.model import param_shapes
from numpy_gpt.optim import adamw_init

from conftest import ROOT, assert_grad_close, corpus_path, numeric_grad


def random_weights(shapes, rng):
    """Non-trivial weights: biases and LayerNorm gains random too (gains around 1), so no path hides."""
    params = {name: rng.standard_normal(shape) * (0.3 if len(shape) == 2 else 0.5) for name, shape in shapes.items()}
    for name, p in params.items():
        if p.ndim == 1 and name.endswith("weight"):       # LayerNorm gains
            p += 1.0
    return params


@st.composite
def small_rungs(draw, rung):
    """-> (config, idx, targets, seed) for the rung: heads and head size up to 3 (n_embd at least 3, so
    LayerNorm does not flatten what the blocks compute: tests/test_model.py's small_models says why),
    T up to 5, B up to 2, vocabulary 2 to 7, one or two blocks for the kid."""
    n_head = 1 if rung in ("uniform", "bigram", "attention") else draw(st.integers(1, 3))
    head_size = draw(st.integers(-(-3 // n_head), 3))
    T, vocab = draw(st.integers(1, 5)), draw(st.integers(2, 7))
    config = rung_config(rung, vocab_size=vocab, block_size=T + 1, n_head=n_head, n_embd=n_head * head_size,
                         n_layer=draw(st.integers(1, 2)) if rung == "kid" else 1)
    B, seed = draw(st.integers(1, 2)), draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return config, rng.integers(0, vocab, (B, T)), rng.integers(0, vocab, (B, T)), seed


def check_rung_gradient(rung, case, dropout=0.0):
    """d loss / d parameter for every element of every tensor of the rung, float64, against centered
    finite differences (conftest.numeric_grad, assert_grad_close: 1e-6 of the gradient's scale).
    With dropout, each forward redraws the same masks from the same seed."""
    config, idx, targets, seed = case
    params = random_weights(rung_param_shapes(rung, config), np.random.default_rng(seed))

    def loss_and_cache():
        rng = np.random.default_rng(seed) if dropout else None
        return rung_forward(rung, params, config, idx, targets, dropout, rng)[1:]
    _, cache = loss_and_cache()
    grads = rung_backward(rung, params, config, cache)
    assert list(grads) == list(params)
    for name, p in params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype
        assert_grad_close(grads[name], numeric_grad(lambda: loss_and_cache()[0], p), f"{rung} {name}")


@pytest.mark.parametrize("rung", [r for r in RUNGS if r != "uniform"])
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_every_rungs_whole_model_gradient_matches_finite_differences(rung, data):
    check_rung_gradient(rung, data.draw(small_rungs(rung)))


@settings(max_examples=3, deadline=None)
@given(small_rungs("kid"))
def test_the_kid_rungs_gradient_with_dropout_as_it_trains(case):
    check_rung_gradient("kid", case, dropout=ladder.DROPOUT["kid"])


def gelu_backward_10_percent_high(dout, cache):
    return 1.1 * gelu_backward(dout, cache)


@settings(max_examples=5, deadline=None)
@given(small_rungs("mlp"))
def test_the_check_catches_a_wrong_gradient_inside_a_bare_rung(case):
    """A planted bug in the mlp rung's own backward (GELU's gradient 10% high) fails the check above."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ladder, "gelu_backward", gelu_backward_10_percent_high)
        with pytest.raises(AssertionError, match=r"mlp \S+: max error"):
            check_rung_gradient("mlp", case)


def test_uniform_guessing_costs_ln_V_and_has_nothing_to_train():
    config = rung_config("uniform", vocab_size=65)
    idx = np.random.default_rng(0).integers(0, 65, (3, 7))
    logits, loss, cache = rung_forward("uniform", {}, config, idx, idx)
    assert logits.shape == (3, 7, 65) and loss == pytest.approx(math.log(65), rel=1e-15)
    assert init_rung("uniform", config) == {} and rung_backward("uniform", {}, config, cache) == {}


def test_each_rung_adds_its_tensors_under_the_kids_names():
    """Counted by hand with V=65, T=C=128: each rung's new tensors, and names that are the kid's."""
    V, T, C = 65, 128, 128
    counts = {"uniform": 0, "bigram": V * V,
              "attention": V * C + T * C + (3 * C * C + 3 * C) + C * V,
              "heads": V * C + T * C + (3 * C * C + 3 * C) + (C * C + C) + C * V}
    counts["mlp"] = counts["heads"] + (4 * C * C + 4 * C) + (C * 4 * C + C)
    counts["block"] = counts["mlp"] + 3 * 2 * C            # ln_1, ln_2, ln_f: a gain and a bias each
    counts["kid"] = 826_368
    assert counts["attention"] == 82_560 and counts["block"] == 231_552
    for rung in RUNGS:
        config = rung_config(rung)
        shapes = rung_param_shapes(rung, config)
        assert sum(math.prod(s) for s in shapes.values()) == counts[rung], rung
        params = init_rung(rung, config, seed=5)
        assert list(params) == list(shapes) and num_params(params) == counts[rung]
        if rung not in ("uniform", "bigram"):
            kid_names = param_shapes(config)
            assert all(kid_names[name] == shape for name, shape in shapes.items()), rung
    assert list(rung_param_shapes("mlp", rung_config("mlp"))) == [
        "wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight",
        "h.0.attn.c_proj.bias", "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias", "h.0.mlp.c_proj.weight",
        "h.0.mlp.c_proj.bias", "lm_head.weight"]
    assert rung_config("attention").n_head == 1 and rung_config("block").n_layer == 1
    assert rung_config("kid") == GPTConfig()


def test_init_follows_the_kids_rule():
    """Weights N(0, 0.02), c_proj N(0, 0.02/sqrt(2 n_layer)), biases 0; block and kid are init_params."""
    p = init_rung("mlp", rung_config("mlp"), seed=3)
    assert all(a.dtype == np.float32 for a in p.values())
    assert not p["h.0.attn.c_attn.bias"].any() and not p["h.0.mlp.c_proj.bias"].any()
    assert abs(p["h.0.mlp.c_fc.weight"].std() - 0.02) < 0.0005               # 65,536 draws: std error ~6e-5
    assert abs(p["h.0.mlp.c_proj.weight"].std() - 0.02 / math.sqrt(2)) < 0.0005
    assert abs(init_rung("bigram", rung_config("bigram"), seed=3)["bigram.weight"].std() - 0.02) < 0.001  # 4,225 draws
    for rung in ("block", "kid"):
        config = rung_config(rung)
        expected = init_params(config, seed=3, dtype=np.float64)
        got = init_rung(rung, config, seed=3, dtype=np.float64)
        assert all(np.array_equal(got[n], expected[n]) for n in expected) and list(got) == list(expected)


def test_block_and_kid_rungs_are_the_kids_own_model():
    """rung_forward and rung_backward of block and kid are gpt_forward and gpt_backward, bit for bit."""
    rng = np.random.default_rng(1)
    for rung in ("block", "kid"):
        config = rung_config(rung, vocab_size=11, block_size=8, n_embd=8, n_head=2)
        params = random_weights(rung_param_shapes(rung, config), rng)
        idx, targets = rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8))
        logits, loss, cache = rung_forward(rung, params, config, idx, targets)
        expected = gpt_forward(params, config, idx, targets)
        assert np.array_equal(logits, expected[0]) and loss == expected[1]
        grads, expected_grads = rung_backward(rung, params, config, cache), gpt_backward(params, config, expected[-1])
        assert all(np.array_equal(grads[n], expected_grads[n]) for n in params)


def small_ids():
    text = corpus_path().read_text(encoding="utf-8")[:20000]
    tokenizer = CharTokenizer.from_text(text)
    return tokenizer, split_train_val(tokenizer.encode(text), 16)


def test_the_kid_rung_takes_the_kid_trainers_steps():
    """Three steps of the kid rung (batches, dropout masks, clipping, AdamW, schedule) end where numpy_gpt's
    trainer ends after the same three steps, in float64. The trainer cuts each batch into one part per
    core and sums the parts' gradients, so the two differ in the order of float sums only: ~1e-16 per
    operation, grown by three AdamW steps (whose update divides by sqrt(v), amplifying the relative
    error of tiny gradients) to well under 1e-9 of each tensor's scale."""
    from numpy_gpt.machinery.cli import check_training_args, training_parser
    from numpy_gpt.machinery.loop import Data
    from numpy_gpt.machinery.threaded import NumpyBackend
    tokenizer, (train_ids, val_ids) = small_ids()
    flags = ["--steps", "3", "--batch-size", "4", "--dtype", "float64", "--n-layer", "2", "--n-head", "2",
             "--n-embd", "8", "--block-size", "16", "--warmup-steps", "2", "--lr", "1e-2"]
    args = check_training_args(training_parser("test", "test").parse_args(flags))
    args.micro_batches = 1
    config = ladder.rung_config("kid", vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=8, block_size=16)
    backend = NumpyBackend(args)
    backend.start(Data(tokenizer, config, train_ids, val_ids, {}), None)
    for step in range(3):
        backend.train_step(step, ladder.lr_at(step, 1e-2, 1e-4, 2, 3))
    params, _ = train_rung("kid", config, train_ids, 3, seed=args.seed, dtype=np.float64, batch_size=4, lr=1e-2,
                           warmup_steps=2)
    assert args.dropout == ladder.DROPOUT["kid"]                  # the ladder's kid drops out as the kid does
    for name, p in backend.params().items():
        assert np.abs(params[name] - p).max() <= 1e-9 * np.abs(p).max(), name


def test_train_rung_learns_and_repeats_itself():
    """The bigram table at a high learning rate: the loss falls far in 60 steps, and a second run draws
    the same batches and ends at the same weights, bit for bit."""
    tokenizer, (train_ids, _) = small_ids()
    config = rung_config("bigram", vocab_size=tokenizer.vocab_size, block_size=16)
    params, losses = train_rung("bigram", config, train_ids, 60, seed=7, dtype=np.float64, batch_size=8, lr=0.1,
                                warmup_steps=5)
    assert losses[0] == pytest.approx(math.log(tokenizer.vocab_size), abs=0.05) and np.mean(losses[-10:]) < 3.0
    again, losses_again = train_rung("bigram", config, train_ids, 60, seed=7, dtype=np.float64, batch_size=8, lr=0.1,
                                     warmup_steps=5)
    assert losses == losses_again and np.array_equal(params["bigram.weight"], again["bigram.weight"])


def test_train_step_draws_the_kids_batch_for_each_step():
    """The batch of step s is get_batch(ids, B, T, batch_rng(seed, s)), the loss train_step reports is that
    batch's (before the update), and the kid's trainer draws its batches so too."""
    tokenizer, (train_ids, _) = small_ids()
    config = rung_config("bigram", vocab_size=tokenizer.vocab_size, block_size=16)
    params = init_rung("bigram", config, seed=2, dtype=np.float64)
    before = {n: p.copy() for n, p in params.items()}
    loss = train_step("bigram", params, adamw_init(params), config, train_ids, 9, 1e-3, seed=2, batch_size=4)
    x, y = get_batch(train_ids, 4, 16, batch_rng(2, 9))
    assert loss == rung_forward("bigram", before, config, x, y)[1]


# ------------------------------------------------------------------------------------------------
# python -m numpy_gpt.ladder, as a user runs it

TINY = ["--batch-size", "4", "--eval-batches", "2"]


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "numpy_gpt.ladder", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def assert_user_error(result, message):
    """One line, `error: ...`, exit status 1 (2 for argparse's own), no traceback."""
    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_help():
    result = run("--help")
    assert result.returncode == 0 and "usage: python -m numpy_gpt.ladder" in result.stdout
    assert "--rungs" in result.stdout and "--resume" in result.stdout


@pytest.mark.parametrize("flags, message", [
    (["--rungs", "bigram,transformer"], "unknown rung 'transformer'; the rungs are uniform, bigram, attention, "
                                        "heads, mlp, block, kid"),
    (["--rungs", ","], "the rungs are uniform, bigram"),
    (["--steps", "0"], "--steps must be in 1..100000, got 0"),
    (["--steps", "100001"], "--steps must be in 1..100000, got 100001"),
    (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
    (["--eval-interval", "0"], "--eval-interval must be at least 1"),
    (["--seed", "-1"], "--seed must be in 0..4294967295"),
    (["--data", "/nonexistent/corpus.txt"], "data file not found: /nonexistent/corpus.txt"),
])
def test_bad_flags_get_one_line(tmp_path, flags, message):
    assert_user_error(run("--out", str(tmp_path / "o"), *flags), message)
    assert not (tmp_path / "o" / "ladder.json").exists()


def states(out):
    """-> {rung: its saved arrays}"""
    result = {}
    for path in sorted((out / "rungs").glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            result[path.stem] = {k: z[k] for k in z.files if k != "__meta__"}
    return result


def test_a_tiny_ladder_then_a_stop_and_resume_that_ends_where_it_would_have(small_text, tmp_path):
    """Three rungs end to end: the table, the plot and the states. Then the same ladder stopped by
    SIGTERM in the kid rung and resumed: it ends at the uninterrupted run's weights, bit for bit, and its
    table's losses are the same."""
    flags = ["--data", str(small_text), "--rungs", "uniform,bigram,kid", "--steps", "30", "--eval-interval", "10",
             *TINY]
    whole = tmp_path / "whole"
    result = run(*flags, "--out", str(whole))
    assert result.returncode == 0, result.stderr
    table = (whole / "ladder.md").read_text()
    assert "| uniform | every character equally likely | 0 |" in table and "| kid |" in table
    assert "| attention |" not in table and table.count("ROMEO:") == 3
    assert (whole / "ladder.png").stat().st_size > 10_000
    run_json = json.loads((whole / "ladder.json").read_text())
    assert list(run_json["results"]) == ["uniform", "bigram", "kid"]
    vocab = len(run_json["data"]["vocab"])
    assert run_json["results"]["uniform"]["val_loss"] == pytest.approx(math.log(vocab), rel=1e-6)
    assert [e["step"] for e in run_json["results"]["kid"]["log"]] == [0, 10, 20, 30]

    stopped = tmp_path / "stopped"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "numpy_gpt.ladder", *flags, "--out", str(stopped)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if "kid step 10:" in line:      # 20 kid steps and two evaluations still to go: seconds
            p.send_signal(signal.SIGTERM)
            break
    out, err = p.communicate(timeout=600)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "continue with --resume" in out
    assert not json.loads((stopped / "ladder.json").read_text())["results"].get("kid")
    result = run("--out", str(stopped), "--resume")                 # --data and the rest: the run's
    assert result.returncode == 0, result.stderr
    assert "rung 2 of 3: bigram is trained already" in result.stdout and "resumed at step" in result.stdout
    a, b = states(whole), states(stopped)
    assert list(a) == list(b) == ["bigram", "kid", "uniform"]
    for rung in a:
        assert all(np.array_equal(a[rung][k], b[rung][k]) for k in a[rung]), rung
    def rows_without_time(text):
        return [line.rsplit("|", 2)[0] for line in text.splitlines() if line.startswith("| ")]
    assert rows_without_time((stopped / "ladder.md").read_text()) == rows_without_time(table)


def test_resume_checks(small_text, tmp_path):
    """A resume as other rungs, with other settings, or with nothing to resume; a new run over an old one;
    a rung's state that holds another rung: each one line, and nothing is overwritten."""
    out = tmp_path / "o"
    assert_user_error(run("--out", str(out), "--resume"), "holds no ladder")
    result = run("--data", str(small_text), "--rungs", "bigram", "--steps", "2", *TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr
    before = (out / "ladder.json").read_bytes()
    assert_user_error(run("--out", str(out), "--resume", "--rungs", "attention"),
                      f"{out} is a run of bigram, not of attention: resume it with --rungs bigram")
    assert_user_error(run("--out", str(out), "--resume", "--steps", "5"), "was run with --steps 2, not 5")
    assert_user_error(run("--out", str(out), "--rungs", "bigram"), "already holds a ladder; pass --resume")
    (out / "rungs" / "bigram.npz").rename(out / "rungs" / "attention.npz")
    run_json = json.loads(before)
    run_json["rungs"], run_json["results"] = ["attention"], {}
    (out / "ladder.json").write_text(json.dumps(run_json))
    assert_user_error(run("--out", str(out), "--resume", "--data", str(small_text)),
                      "holds a run of the 'bigram' rung, not of 'attention'; it cannot be resumed as attention")
    other = tmp_path / "other.txt"
    other.write_text(small_text.read_text()[:5000])
    assert_user_error(run("--out", str(out), "--resume", "--data", str(other)), "was trained on another text")


def test_the_ladder_needs_no_torch():
    result = subprocess.run([sys.executable, "-c", "import sys, numpy_gpt.ladder, numpy_gpt.ladder_run; "
                             "assert 'torch' not in sys.modules; print('ok')"], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
