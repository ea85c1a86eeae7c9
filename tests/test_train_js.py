"""peek's JavaScript training (peek/web/train.js) against numpy_gpt: every layer's gradients, clipping, AdamW,
the schedule and the batches, and rungs 1 and 2 of the ladder trained step by step to the same weights.

node runs the real files through tests/js/train_driver.mjs; numpy_gpt computes every expected value here,
in float64, from the same inputs.
"""
import contextlib
import json
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_gpt import layers
from numpy_gpt.data import batch_rng, eval_batches, get_batch
from numpy_gpt.machinery.rounding import TOLERANCE, Shadow
from numpy_gpt.optim import adamw_init, adamw_step, clip_grad_norm, lr_at
from parity.compare import compare_losses, compare_run

from conftest import ROOT, corpus_path

NODE = shutil.which("node")
if NODE is None:
    if os.environ.get("CI") == "true":
        pytest.fail("node is not on PATH, and CI=true: CI must test peek's JavaScript training", pytrace=False)
    pytest.skip("node is not on PATH: peek's JavaScript training (peek/web/train.js) is not tested",
                allow_module_level=True)

DRIVER = ROOT / "tests" / "js" / "train_driver.mjs"

# One layer, or one rung's forward and backward: both sides compute in float64 from the same inputs and
# differ only in the order of their sums (BLAS and einsum against train.js's loops). parity's float64 bar
# bounds that for the kid's longest path (parity.compare.TOLERANCE, from the path's roundings), longer
# than any here; a real slip (a lost scale, a term of the softmax backward, a wrong index) moves a
# gradient by 1e-3 or more.
LAYER_TOL = TOLERANCE["float64"]


def js(tasks):
    """Run the driver on tasks -> their results."""
    proc = subprocess.run([NODE, str(DRIVER)], input=json.dumps({"tasks": tasks}), capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"]


def flat(a):
    return np.asarray(a, dtype=np.float64).ravel().tolist()


def relative_error(got, expected):
    """max |got - expected| over the scale of expected, max |expected|."""
    got, expected = np.asarray(got, dtype=np.float64).ravel(), np.asarray(expected, dtype=np.float64).ravel()
    assert got.shape == expected.shape, f"{got.shape} numbers, numpy_gpt has {expected.shape}"
    scale = np.abs(expected).max()
    return np.abs(got - expected).max() / (scale if scale > 0 else 1.0)


def assert_close(got, expected, name, tol=LAYER_TOL):
    err = relative_error(got, expected)
    assert err < tol, f"{name}: max difference {err:.3e} of its scale (allowed {tol:.0e})"


# ------------------------------------------------------------------------------------------------
# the random numbers and the batches

def test_integers_equal_numpy_bit_for_bit():
    """Generator.integers(low, high, size) for list seeds, ranges of 1, small, large and exactly 2**32,
    called several times on one generator (a uint32 half left over carries from one call to the next)."""
    cases = [([1337, 2, 0, 0], 0, 150_000, 16), ([0], 0, 1, 5), ([1, 2, 3], -5, 7, 33), ([7, 4, 1], 0, 2**32, 9),
             ([2**40, 5], 10, 3_000_000_010, 31), ([3], 0, 2**31 + 1, 64), ([2**60 + 3, 2, 1], 0, 1000, 16)]
    results = js([{"op": "integers", "seed": [str(w) for w in seed], "low": low, "high": high, "size": size, "calls": 3}
                  for seed, low, high, size in cases])
    for (seed, low, high, size), got in zip(cases, results):
        rng = np.random.default_rng(seed)
        assert got == [rng.integers(low, high, size=size).tolist() for _ in range(3)], (seed, low, high)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**80), n=st.integers(2, 2**32))
def test_integers_equal_numpy_for_drawn_seeds_and_ranges(seed, n):
    """Seeds of one to three words, each reaching default_rng as a Number or, past 2**53, a BigInt."""
    [got] = js([{"op": "integers", "seed": [str(seed), "2", "7"], "low": 0, "high": n, "size": 40, "calls": 1}])
    assert got == [np.random.default_rng([seed, 2, 7]).integers(0, n, size=40).tolist()]


def test_batches_equal_numpy():
    """get_batch with batch_rng(seed, step), and eval_batches' fixed batches, window for window."""
    ids = np.random.default_rng(0).integers(0, 65, size=5_000)
    steps = [0, 1, 99, 12_345]
    results = js([{"op": "batch", "ids": ids.tolist(), "batch_size": 16, "block_size": 64, "seed": 1337, "step": s}
                  for s in steps] +
                 [{"op": "eval_batches", "ids": ids.tolist(), "n": 3, "batch_size": 8, "block_size": 32, "seed": 1337,
                   "split": 1}])
    for step, got in zip(steps, results):
        x, y = get_batch(ids, 16, 64, batch_rng(1337, step))
        assert got == {"x": x.ravel().tolist(), "y": y.ravel().tolist()}, f"step {step}"
    expected = eval_batches(ids, 3, 8, 32, 1337, split=1)
    assert results[-1] == [{"x": x.ravel().tolist(), "y": y.ravel().tolist()} for x, y in expected]


# ------------------------------------------------------------------------------------------------
# the layers: random inputs, weights and upstream gradients, never all ones or zeros

shapes = st.fixed_dictionaries({"B": st.integers(1, 3), "T": st.integers(1, 9), "H": st.integers(1, 3),
                                "D": st.integers(1, 6), "V": st.integers(2, 11), "seed": st.integers(0, 2**32)})


@settings(max_examples=6, deadline=None)
@given(s=shapes)
def test_layer_gradients_equal_numpy(s):
    """embedding, linear (with and without a bias), attention and cross-entropy: out and every gradient."""
    B, T, H, D, V = s["B"], s["T"], s["H"], s["D"], s["V"]
    C = H * D
    rng = np.random.default_rng(s["seed"])
    idx, targets = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    wte, wpe = rng.standard_normal((V, C)), rng.standard_normal((T + 2, C))
    x, w, b = rng.standard_normal((B, T, C)), rng.standard_normal((3 * C, C)), rng.standard_normal(3 * C)
    qkv = 2 * rng.standard_normal((B, T, 3 * C))                  # scores of several units: peaked attention
    logits = 3 * rng.standard_normal((B, T, V))
    d_embed, d_linear, d_attn = (rng.standard_normal(shape) for shape in [(B, T, C), (B, T, 3 * C), (B, T, C)])
    dloss = float(rng.uniform(0.5, 2.0))
    emb, lin, lin0, attn, ce = js([
        {"op": "embedding", "idx": flat(idx), "B": B, "wte": flat(wte), "wpe": flat(wpe), "C": C, "dout": flat(d_embed)},
        {"op": "linear", "x": flat(x), "w": flat(w), "b": flat(b), "Cout": 3 * C, "dout": flat(d_linear)},
        {"op": "linear", "x": flat(x), "w": flat(w), "b": None, "Cout": 3 * C, "dout": flat(d_linear)},
        {"op": "attention", "qkv": flat(qkv), "n_head": H, "B": B, "T": T, "dout": flat(d_attn)},
        {"op": "cross_entropy", "logits": flat(logits), "targets": flat(targets), "V": V, "dloss": dloss}])

    out, cache = layers.embedding_forward(idx, wte, wpe)
    assert_close(emb["out"], out, "embedding out")
    for name, g in zip(["dwte", "dwpe"], layers.embedding_backward(d_embed, cache)):
        assert_close(emb[name], g, f"embedding {name}")
    for got, bias in [(lin, b), (lin0, None)]:
        out, cache = layers.linear_forward(x, w, bias)
        assert_close(got["out"], out, "linear out")
        dx, dw, db = layers.linear_backward(d_linear, cache)
        for name, g in [("dx", dx), ("dw", dw)] + [("db", db)] * (bias is not None):
            assert_close(got[name], g, f"linear {name} (bias {bias is not None})")
        assert bias is not None or got["db"] is None
    out, cache = layers.attention_forward(qkv, H)
    assert_close(attn["out"], out, "attention out")
    assert_close(attn["att"], cache[3], "attention att")
    assert_close(attn["dqkv"], layers.attention_backward(d_attn, cache), "attention dqkv")
    loss, cache = layers.cross_entropy_forward(logits, targets)
    assert_close([ce["loss"]], [loss], "cross-entropy loss")
    assert_close(ce["dlogits"], layers.cross_entropy_backward(dloss, cache), "cross-entropy dlogits")


# ------------------------------------------------------------------------------------------------
# the optimizer


def test_clipping_equals_numpy():
    rng = np.random.default_rng(3)
    grads = {"a": rng.standard_normal((4, 5)), "b": rng.standard_normal(7)}
    for max_norm in [0.5, 100.0, 0.0]:
        [got] = js([{"op": "clip", "grads": {n: flat(g) for n, g in grads.items()}, "max_norm": max_norm}])
        clipped, norm = clip_grad_norm(grads, max_norm)
        assert math.isclose(got["norm"], norm, rel_tol=1e-14)
        for name, g in clipped.items():
            assert_close(got["grads"][name], g, f"clipped {name} at max_norm {max_norm}")


def test_adamw_equals_numpy_over_several_steps():
    """Five steps with a varying rate: 2-D weights decay, the 1-D bias does not."""
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((3, 4)), "bias": rng.standard_normal(4)}
    grads = [{n: rng.standard_normal(p.shape) for n, p in params.items()} for _ in range(5)]
    lrs = [3e-3, 1e-2, 2e-3, 5e-4, 1e-1]
    [got] = js([{"op": "adamw", "params": {n: flat(p) for n, p in params.items()},
                 "shapes": {n: list(p.shape) for n, p in params.items()},
                 "grads": [{n: flat(g) for n, g in step.items()} for step in grads], "lrs": lrs,
                 "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.1}])
    expected = {n: p.copy() for n, p in params.items()}
    state = adamw_init(expected)
    for step, lr in zip(grads, lrs):
        adamw_step(expected, step, state, lr, (0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for name in params:
        assert_close(got["params"][name], expected[name], f"AdamW {name}")
        assert_close(got["m"][name], state["m"][name], f"AdamW m {name}")
        assert_close(got["v"][name], state["v"][name], f"AdamW v {name}")


def test_lr_schedule_equals_numpy():
    steps = [0, 1, 50, 99, 100, 101, 500, 999, 1000, 1500]
    [got] = js([{"op": "lr_at", "steps": steps, "lr": 3e-3, "min_lr": 3e-5, "warmup_steps": 100, "total_steps": 1000}])
    for step, value in zip(steps, got):
        assert math.isclose(value, lr_at(step, 3e-3, 3e-5, 100, 1000), rel_tol=1e-15, abs_tol=0), step


# ------------------------------------------------------------------------------------------------
# rungs 1 and 2: the whole model's gradients, and training at the tab's sizes

from numpy_gpt import ladder                                     # noqa: E402
from numpy_gpt.data import CharTokenizer                         # noqa: E402
from peek.ladder_tab import TAB, TAB_RUNGS, rung_settings, tab_text   # noqa: E402



@contextlib.contextmanager
def stepping(logits, shadow=None):
    """While active, numpy_gpt.ladder's steps append their largest |logit| to logits, and with shadow (a
    numpy_gpt.machinery.rounding.Shadow) carry the error model's errors: the run whose distance from numpy_gpt's own
    sets a trained rung's bars (parity.compare.compare_run), as for the kid."""
    forward, backward, step = ladder.rung_forward, ladder.rung_backward, ladder.adamw_step

    def watched_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        logits.append(float(np.abs(out[0]).max()))
        return out

    def shadowed_step(params, *args, **kwargs):
        step(params, *args, **kwargs)
        shadow.after_step(params)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ladder, "rung_forward", watched_forward)
        if shadow:
            patch.setattr(ladder, "rung_backward", lambda *args: shadow.gradients(backward(*args)))
            patch.setattr(ladder, "adamw_step", shadowed_step)
        yield


def assert_trained_alike(got, ref, shadow, what):
    """got's weights (flat lists, by name) against numpy_gpt's run ref, within the bars its shadow sets."""
    got = {name: np.asarray(got[name], dtype=np.float64).reshape(p.shape) for name, p in ref.items()}
    rows = compare_run(what + " ", got, ref, ref, shadow)
    assert all(r.ok for r in rows), [(r.name, r.max_rel, r.tol) for r in rows if not r.ok]


def random_rung_params(rung, config, seed):
    """The rung's first weights moved well off them: biases non-zero, weights of several scales."""
    rng = np.random.default_rng(seed)
    params = ladder.init_rung(rung, config, seed, np.float64)
    return {name: p + rng.standard_normal(p.shape) * (0.5 if p.ndim == 1 else 0.3) for name, p in params.items()}


@pytest.mark.parametrize("rung", TAB_RUNGS)
@pytest.mark.parametrize("B, T, C", [(2, 5, 6), (3, 9, 4), (TAB["batch_size"], TAB["block_size"], TAB["n_embd"])])
def test_rung_gradients_equal_numpy(rung, B, T, C):
    """rung_forward and rung_backward: the logits, the loss and every parameter's gradient."""
    config = ladder.rung_config(rung, block_size=T + 3, n_embd=C)
    params = random_rung_params(rung, config, seed=B * 100 + T)
    rng = np.random.default_rng(T)
    idx, targets = rng.integers(0, config.vocab_size, (2, B, T))
    [got] = js([{"op": "rung", "rung": rung, "config": config.to_dict(), "params": {n: flat(p) for n, p in params.items()},
                 "idx": flat(idx), "targets": flat(targets), "B": B}])
    logits, loss, cache = ladder.rung_forward(rung, params, config, idx, targets)
    grads = ladder.rung_backward(rung, params, config, cache)
    assert_close(got["logits"], logits, f"{rung} logits")
    assert_close([got["loss"]], [loss], f"{rung} loss")
    assert list(got["grads"]) == list(grads), "the gradients' names and order"
    for name, g in grads.items():
        assert_close(got["grads"][name], g, f"{rung} d{name}")


@pytest.fixture(scope="module")
def tab_ids():
    """The tab's training ids: the slice's first 90%, in the whole corpus's vocabulary."""
    text, vocab = tab_text(corpus_path().read_text(encoding="utf-8"))
    ids = CharTokenizer(vocab).encode(text)
    return ids[:int(0.9 * len(ids))]


@pytest.mark.parametrize("rung, steps", [("bigram", 300), ("attention", 120)])
def test_training_ends_at_numpys_weights(rung, steps, tab_ids):
    """`steps` steps of the tab's rung, from numpy_gpt's first weights, under node and in numpy_gpt.ladder.train_rung
    (float64, the tab's sizes and settings, a run of `steps` steps: past the warmup, into the cosine)."""
    config, settings = rung_settings(rung)
    settings = {**settings, "steps": steps}
    first = ladder.init_rung(rung, config, settings["seed"], np.float64)
    [got] = js([{"op": "train", "rung": rung, "config": config.to_dict(), "ids": tab_ids.tolist(), "steps": steps,
                 "settings": settings, "params": {n: flat(p) for n, p in first.items()}}])
    def numpy_run(shadow=None, lr_factor=1.0):
        logits = []
        with stepping(logits, shadow):
            params, losses = ladder.train_rung(
                rung, config, tab_ids, steps, seed=settings["seed"], dtype=np.float64,
                batch_size=settings["batch_size"], lr=settings["lr"] * lr_factor, min_lr=settings["min_lr"] * lr_factor,
                warmup_steps=settings["warmup_steps"], betas=(settings["beta1"], settings["beta2"]),
                weight_decay=settings["weight_decay"], grad_clip=settings["grad_clip"])
        return params, losses, logits
    params, losses, logits = numpy_run()
    shadow, shadow_losses, _ = numpy_run(Shadow())
    assert losses[-1] < losses[0] - 0.5, "the rung did not learn: the test would prove little"
    rows = compare_losses(f"{rung} loss at step ", got["losses"], losses, losses, shadow_losses, logits)
    assert all(r.ok for r in rows), [(r.name, r.max_rel, r.tol) for r in rows if not r.ok]
    for name, p in params.items():
        assert relative_error(got["params"][name], first[name]) > 1e-2, f"{name} did not move"
    assert_trained_alike(got["params"], params, shadow, f"{rung} after {steps} steps")
    off = numpy_run(lr_factor=1 + 1e-4)[0]              # the bars are no blanket: a rate 0.01% off falls outside
    assert not all(r.ok for r in compare_run("", off, params, params, shadow))
    if rung == "attention":                     # the keys' bias: zero gradient, so it only ever holds noise
        C = config.n_embd
        for side, bias in (("numpy_gpt", params["h.0.attn.c_attn.bias"]), ("train.js", got["params"]["h.0.attn.c_attn.bias"])):
            assert np.abs(np.asarray(bias)[C:2 * C]).max() < 1e-9, f"{side}'s key bias is not noise"


# ------------------------------------------------------------------------------------------------
# the page, in chromium: it trains to numpy_gpt's weights; pause and reset work

from browser import (DESKTOP, PHONE, assert_no_problems, browser, browser_page, problems, screenshot,  # noqa: E402,F401
                     served, visit)
from numpy_gpt.machinery.checkpoint import save_weights                     # noqa: E402
from numpy_gpt.config import GPTConfig                            # noqa: E402
from numpy_gpt.model import init_params                           # noqa: E402
from numpy_gpt.optim import adamw_init as numpy_adamw_init        # noqa: E402
from test_numpy_cli import run                                    # noqa: E402

SHOTS = ROOT / "out" / "screenshots"


@pytest.fixture(scope="module")
def ladder_site(tmp_path_factory):
    """A site from python -m peek build, around a tiny untrained kid: the ladder page needs only the corpus."""
    folder = tmp_path_factory.mktemp("ladder-site")
    chars = CharTokenizer.from_text(corpus_path().read_text(encoding="utf-8")).chars
    config = GPTConfig(vocab_size=len(chars), block_size=16, n_layer=1, n_head=1, n_embd=8)
    save_weights(folder / "kid.npz", init_params(config, seed=1), config, chars)
    result = run("-m", "peek", "build", "--checkpoint", str(folder / "kid.npz"), "--out", str(folder / "site"),
                 env={**os.environ, "TINY_LLM_CORPUS": str(corpus_path())})
    assert result.returncode == 0, result.stderr
    return folder / "site"


def numpy_after(rung, steps, ids, shadow=None):
    """numpy_gpt.ladder's weights after the first `steps` steps of the tab's run of the rung (float64):
    train_rung's loop, stopped where the page was paused, on the schedule of the tab's whole run. With
    shadow, that run carrying the error model's errors (stepping)."""
    config, s = rung_settings(rung)
    params = ladder.init_rung(rung, config, s["seed"], np.float64)
    opt = numpy_adamw_init(params)
    with stepping([], shadow):
        for step in range(steps):
            ladder.train_step(rung, params, opt, config, ids, step,
                              lr_at(step, s["lr"], s["min_lr"], s["warmup_steps"], s["steps"]), s["seed"],
                              s["batch_size"], betas=(s["beta1"], s["beta2"]), weight_decay=s["weight_decay"],
                              grad_clip=s["grad_clip"])
    return params


def assert_page_trained_alike(page, rung, steps, ids, what):
    assert_trained_alike(page_weights(page, rung), numpy_after(rung, steps, ids),
                         numpy_after(rung, steps, ids, Shadow()), what)


def train_in_page(page, at_least):
    """Press Train, wait until the page has taken at_least steps, press Pause -> the step it stopped at."""
    page.click("#train-pause")
    page.wait_for_function(f"Number(document.body.dataset.trainStep) >= {at_least}", timeout=120_000)
    page.click("#train-pause")
    page.wait_for_selector("body[data-running=false]")
    return int(page.get_attribute("body", "data-train-step"))


def page_weights(page, rung):
    return page.evaluate(f"""() => Object.fromEntries(Object.entries(globalThis.ladderTab.runs[{json.dumps(rung)}].params)
                                                        .map(([name, p]) => [name, Array.from(p)]))""")


@pytest.mark.parametrize("rung, at_least", [("bigram", 150), ("attention", 25)])
def test_the_page_trains_to_numpys_weights(browser, ladder_site, tab_ids, rung, at_least):
    """Train in the page, pause wherever it stops: its weights are numpy_gpt's after as many steps. Pause
    holds them, and going on continues from them; Reset goes back to the first weights, and training
    again retraces the same path."""
    with served(ladder_site) as url, browser_page(browser, url) as page:
        assert_no_problems(visit(page, url + "ladder.html"))
        page.wait_for_selector("#train-pause:not([disabled])")
        page.click(f"button[data-rung={rung}]")
        first = page_weights(page, rung)
        steps = train_in_page(page, at_least)
        assert steps >= at_least
        got = page_weights(page, rung)
        assert_page_trained_alike(page, rung, steps, tab_ids, f"the page after {steps} steps")
        page.wait_for_timeout(300)                                 # paused: nothing moves
        assert int(page.get_attribute("body", "data-train-step")) == steps
        assert page_weights(page, rung) == got
        more = train_in_page(page, steps + 5)                      # Go on: from where it paused, no step lost
        assert_page_trained_alike(page, rung, more, tab_ids, f"after going on to {more} steps")
        page.click("#reset")
        assert page.get_attribute("body", "data-train-step") == "0"
        assert page_weights(page, rung) == first
        again = train_in_page(page, 3)
        assert_page_trained_alike(page, rung, again, tab_ids, f"after Reset and {again} steps")
        assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
        assert_no_problems(problems(page))


def test_the_page_trains_to_the_end_and_fits_a_phone(browser, ladder_site):
    """Rung 1 trains to its last step: the val loss falls from ln 65 to near the bigram's floor, the sample
    changes, and the page fits 1280 and 390 pixels (screenshots in out/screenshots/)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with served(ladder_site) as url, browser_page(browser, url) as page:
        assert_no_problems(visit(page, url + "ladder.html"))
        page.wait_for_selector("#train-pause:not([disabled])")
        before = page.inner_text("#sample")
        page.click("#train-pause")
        page.wait_for_selector("#train-pause:text('Done')", timeout=120_000)
        vals = page.evaluate("globalThis.ladderTab.runs.bigram.vals")
        assert abs(vals[0][1] - math.log(65)) < 0.05 and vals[-1][1] < 2.5, vals
        assert page.inner_text("#sample") != before
        for width, tag in ((DESKTOP, "desktop"), (PHONE, "phone")):
            page.set_viewport_size({"width": width, "height": 800})
            page.wait_for_timeout(100)
            assert page.evaluate("document.documentElement.scrollWidth") <= width + 1, f"overflows at {width}px"
            screenshot(page, SHOTS / f"ladder-{tag}.png", width)
        assert_no_problems(problems(page))


def test_build_writes_the_ladder_page(ladder_site):
    """peek build ships the page, its code and its data; the text is tinyshakespeare's first TAB_CHARS."""
    from peek.ladder_tab import TAB_CHARS
    for name in ("ladder.html", "ladder.js", "dom.js", "train.js", "kid.js", "rng.js", "data/ladder.json", "data/ladder.txt",
                 "data/ladder-init.bin"):
        assert (ladder_site / name).is_file(), name
    assert (ladder_site / "data" / "ladder.txt").read_text(encoding="utf-8") == \
        corpus_path().read_text(encoding="utf-8")[:TAB_CHARS]
    assert 'href="ladder.html"' in (ladder_site / "index.html").read_text()


def test_the_page_without_the_text_says_how_to_build_it(browser, tmp_path, monkeypatch):
    """A site built where tinyshakespeare is not found: the page says so in one line and offers no Train."""
    from benchmarks.ladder_tab import write_page
    from peek import ladder_tab
    monkeypatch.setattr(ladder_tab, "find_corpus", lambda: None)
    write_page(tmp_path / "site", None)
    with served(tmp_path / "site") as url, browser_page(browser, url) as page:
        assert_no_problems(visit(page, url + "ladder.html"))
        page.wait_for_function("document.getElementById('status').textContent.includes('without tinyshakespeare')")
        assert page.locator("#train-pause").is_disabled()
        assert_no_problems(problems(page))


def test_ladder_table_reads_a_ladder_run(tmp_path):
    """The table the page shows, from a run's ladder.json: one row a finished rung, what each bought."""
    from peek.ladder_tab import ladder_table
    from numpy_gpt.machinery.corpus import TINYSHAKESPEARE_SHA256
    run = {"rungs": ["uniform", "bigram", "attention"], "data": {"sha256": TINYSHAKESPEARE_SHA256},
           "settings": {"steps": 2000, "batch_size": 32, "eval_batches": 20},
           "results": {"uniform": {"parameters": 0, "val_loss": 4.1744, "train_loss": 4.1744, "seconds": 0.2},
                       "bigram": {"parameters": 4225, "val_loss": 2.5701, "train_loss": 2.5576, "seconds": 28.7}}}
    (tmp_path / "ladder.json").write_text(json.dumps(run))
    table = ladder_table(tmp_path / "ladder.json")
    assert [r["rung"] for r in table["rows"]] == ["0 uniform", "1 bigram"]
    assert table["rows"][1]["bought (nats)"] == "+1.604" and table["rows"][1]["parameters"] == "4,225"
    assert "2,000 steps" in table["caption"] and "all of tinyshakespeare" in table["caption"]
    (tmp_path / "ladder.json").write_text("{not json")
    assert ladder_table(tmp_path / "ladder.json") is None
    assert ladder_table(tmp_path / "missing.json") is None


def test_the_ladder_benchmark_runs():
    """benchmarks.ladder_tab at its shortest: it trains in chromium and prints its table (no speed asserted)."""
    result = run("-m", "benchmarks.ladder_tab", "--seconds", "2", "--longer", "1", "--corpus", str(corpus_path()))
    assert result.returncode == 0, result.stderr
    assert "| rung 1: from Train to within 0.05 of the tab's last step" in result.stdout
    assert "| rung 2: steps a minute" in result.stdout
