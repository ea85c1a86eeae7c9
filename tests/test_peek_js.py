"""peek's JavaScript kid (peek/web/kid.js, rng.js), the third backend, against numpy_gpt: the same random
numbers bit for bit, the same logits and attention, the same KV cache, and the same text from the same seed.

node runs the real files through tests/js/driver.mjs; numpy_gpt computes every expected value here, in
float64 on the float32 weights that the JavaScript reads from weights.bin.
"""
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_gpt import GPTConfig, init_params
from numpy_gpt.machinery.checkpoint import load_weights
from numpy_gpt.data import CharTokenizer, get_batch
from numpy_gpt.model import gpt_backward, gpt_decode, gpt_forward, gpt_prefill, new_kv_cache
from numpy_gpt.optim import adamw_init, adamw_step, lr_at
from numpy_gpt.sampling import generate, sample_next
from parity.compare import TOLERANCE
from peek.weights import write_weights

from conftest import ROOT, corpus_path

NODE = shutil.which("node")
if NODE is None:
    if os.environ.get("CI") == "true":
        pytest.fail("node is not on PATH, and CI=true: CI must test peek's JavaScript kid", pytrace=False)
    pytest.skip("node is not on PATH: peek's JavaScript kid (peek/web) is not tested", allow_module_level=True)

DRIVER = ROOT / "tests" / "js" / "driver.mjs"
KID_NPZ = ROOT / "out" / "kid.npz"

# Both sides compute in float64 on the same float32 weights; only the order of the sums differs (BLAS
# against kid.js's loops). parity.compare's float64 tolerance bounds two such computations of the kid's
# forward and backward (u = 2^-53, the probabilistic bound over its longest path): 2.2e-13 of a tensor's
# scale, and the forward alone has fewer roundings. A real slip (a lost 1/sqrt(D), eps, a term of the
# GELU) moves the logits by 1e-6 or more. Attention probabilities lie in [0, 1], so the same bar holds
# for them in absolute terms.
TOL = TOLERANCE["float64"]


def run_js(tasks, weights=None):
    """Run the driver on one job -> its parsed answer: {"results": [...]} or {"error": message}."""
    job = {"weights": str(weights) if weights else None, "tasks": tasks}
    proc = subprocess.run([NODE, str(DRIVER)], input=json.dumps(job), capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def js_results(tasks, weights=None):
    answer = run_js(tasks, weights)
    assert "error" not in answer, answer["error"]
    return answer["results"]


def assert_close(js, expected, name):
    js, expected = np.asarray(js, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert js.shape == expected.shape, f"{name}: shape {js.shape}, numpy_gpt's {expected.shape}"
    scale = np.abs(expected).max()
    err = np.abs(js - expected).max() / scale
    assert err < TOL, f"{name}: max difference {err:.3e} of the scale {scale:.3e}"


# ------------------------------------------------------------------------------------------------
# the random numbers

SEEDS = [0, 1, 1337, 2**32 + 5, 2**63 + 12345, 2**64 - 1, 2**128 + 7]


def numpy_randoms(seed, n):
    rng = np.random.default_rng(seed)
    return [rng.random() for _ in range(n)]      # one at a time, as sample_next draws them


def test_random_equals_numpy_bit_for_bit():
    """1,000 numbers from each seed; seeds below 2**53 reach default_rng as Numbers, larger ones as BigInts."""
    results = js_results([{"op": "random", "seed": str(seed), "n": 1000} for seed in SEEDS])
    for seed, values in zip(SEEDS, results):
        assert values == numpy_randoms(seed, 1000), f"seed {seed}"


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**160))
def test_random_equals_numpy_for_drawn_seeds(seed):
    [values] = js_results([{"op": "random", "seed": str(seed), "n": 50}])
    assert values == numpy_randoms(seed, 50)


# ------------------------------------------------------------------------------------------------
# the models: random inits in two shapes, a quickly trained tiny one, and the real kid when trained


@dataclass
class Model:
    folder: Path
    params: dict        # float64, cast from the float32 weights.bin holds
    config: GPTConfig
    chars: str


def random_weights(config, seed):
    """numpy_gpt's init with every 1-D tensor (LayerNorm weights, all biases) moved off its 1 or 0, which
    would hide a missing scale or shift -> float32, as weights.bin stores them."""
    rng = np.random.default_rng(seed + 100)
    params = init_params(config, seed, np.float64)
    return {name: (p + 0.2 * rng.standard_normal(p.shape) if p.ndim == 1 else p).astype(np.float32)
            for name, p in params.items()}


def train_tiny(steps=300):
    """A tiny model trained by numpy_gpt on 4,000 characters of tinyshakespeare for 300 AdamW steps
    (a few seconds): weights with learned structure, and peaked logits that sampling tests need."""
    text = corpus_path().read_text(encoding="utf-8")[:4000]
    tokenizer = CharTokenizer.from_text(text)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=24)
    ids = tokenizer.encode(text)
    params, rng = init_params(config, seed=0), np.random.default_rng(0)
    opt, losses = adamw_init(params), []
    for step in range(steps):
        x, y = get_batch(ids, 16, config.block_size, rng)
        _, loss, cache = gpt_forward(params, config, x, y)
        adamw_step(params, gpt_backward(params, config, cache), opt, lr_at(step, 1e-2, 1e-3, 30, steps))
        losses.append(float(loss))
    assert np.mean(losses[-30:]) < np.mean(losses[:30]) - 1.0, "the tiny model did not learn"
    return params, config, tokenizer.chars


def printable_chars(n):
    return "".join(chr(33 + i) for i in range(n))


def make_model(kind, folder):
    if kind == "kid-init":      # the kid's shape: vocab 65, block 128, 4 layers, 4 heads, 128 wide
        config = GPTConfig()
        params, chars = random_weights(config, seed=1), CharTokenizer.from_text(corpus_path().read_text()).chars
    elif kind == "small-init":  # 18 wide: kid.js's linear_forward also takes its path for Cin % 4 != 0
        config = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=3, n_embd=18)
        params, chars = random_weights(config, seed=2), printable_chars(11)
    elif kind == "tiny-trained":
        params, config, chars = train_tiny()
    else:
        if not KID_NPZ.is_file():
            pytest.skip(f"{KID_NPZ} is not trained yet; tiny-trained stands in for a trained model")
        params, config, chars, _ = load_weights(KID_NPZ)
    params = {name: np.asarray(p, dtype=np.float32) for name, p in params.items()}
    write_weights(folder, params, config, chars)
    return Model(folder, {name: p.astype(np.float64) for name, p in params.items()}, config, chars)


@pytest.fixture(scope="module", params=["kid-init", "small-init", "tiny-trained", "kid.npz"])
def model(request, tmp_path_factory):
    return make_model(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_model("tiny-trained", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def kid_shaped(tmp_path_factory):
    return make_model("kid-init", tmp_path_factory.mktemp("kid"))


def prompts(config, seed=0):
    """Windows of 1, 7 and block_size ids."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, config.vocab_size, T).tolist() for T in (1, min(7, config.block_size), config.block_size)]


# ------------------------------------------------------------------------------------------------
# the forward, its attention and the KV cache


@pytest.fixture(scope="module")
def forwards(model):
    """(ids, numpy_gpt's (logits, its forward's cache), kid.js's forward) for each prompt."""
    windows = prompts(model.config)
    js = js_results([{"op": "forward", "ids": ids} for ids in windows], model.folder)
    out = []
    for ids, r in zip(windows, js):
        logits, _, cache = gpt_forward(model.params, model.config, np.array([ids]))
        out.append((ids, (logits, cache), r))
    return out


def test_forward_logits_equal_numpy(model, forwards):
    for ids, (logits, _), js in forwards:
        assert_close(js["logits"], logits[0], f"logits, T={len(ids)}")          # (T, V)


def test_attention_equals_numpy(model, forwards):
    """Every head's (T, T) probabilities: causal (zero above the diagonal) and rows summing to 1."""
    for ids, (_, cache), js in forwards:
        for l in range(model.config.n_layer):
            att = np.array(js["att"][l])                                        # (H, T, T)
            assert np.abs(att - cache[f"h.{l}.attn"][3][0]).max() < TOL, f"layer {l}, T={len(ids)}"
            assert np.abs(att.sum(axis=-1) - 1.0).max() < TOL
            assert not np.triu(att, k=1).any()


@pytest.mark.parametrize("n_prefill", [1, 5])
def test_kv_cache_equals_full_forward(model, n_prefill):
    """Prefill the first n_prefill ids, decode the rest one position at a time: each position's logits
    and attention equal the full forward's."""
    ids = prompts(model.config, seed=1)[-1]                                     # block_size ids
    [js] = js_results([{"op": "cached", "ids": ids, "n_prefill": n_prefill}], model.folder)
    logits, _, cache = gpt_forward(model.params, model.config, np.array([ids]))
    assert_close(js["logits"], logits[0, n_prefill - 1:], "cached logits")      # (T - n_prefill + 1, V)
    for i, step in enumerate(js["att"]):
        t = n_prefill - 1 + i
        for l in range(model.config.n_layer):
            expected = cache[f"h.{l}.attn"][3][0, :, t, :t + 1]                # (H, t+1): q, k, v, att
            assert np.abs(np.array(step[l]) - expected).max() < TOL, f"position {t}, layer {l}"


def test_a_prefill_split_in_two_equals_one_bit_for_bit(model):
    """gpt_prefill of a window's first k ids, then gpt_extend of the rest on top of that cache, as the
    playground does when its worker has primed the first part (peek/web/ahead.js): the same logits, last
    attention and KV cache as one prefill of the window, to the bit, since every sum runs in the same order."""
    ids = prompts(model.config, seed=2)[-1]                                     # block_size ids
    splits = sorted({1, len(ids) // 2, len(ids) - 1} - {0})
    results = js_results([{"op": "split", "ids": ids, "at": k} for k in splits], model.folder)
    for k, js in zip(splits, results):
        assert js["split"] == js["whole"], f"split at {k} of {len(ids)}"


# ------------------------------------------------------------------------------------------------
# sampling and the text


def test_pairwise_sum_equals_numpy_sum_bit_for_bit():
    """kid.js's pairwise_sum is np.sum's order, so probs.sum() and every probability are numpy's to the bit.
    A plain left-to-right sum differs in some of these cases, so the test can tell the two apart."""
    rng = np.random.default_rng(3)
    arrays = [np.exp(4 * rng.standard_normal(n)) for n in [*range(1, 300), 513, 1000, 4097, 8192]]
    sums = js_results([{"op": "sum", "values": a.tolist()} for a in arrays])
    assert sums == [float(a.sum()) for a in arrays]
    assert any(float(np.cumsum(a)[-1]) != float(a.sum()) for a in arrays)


RULES = {"greedy": dict(temperature=0.0, top_k=None, top_p=1.0),
         "temperature": dict(temperature=1.3, top_k=None, top_p=1.0),
         "top_k": dict(temperature=0.8, top_k=10, top_p=1.0),
         "top_p": dict(temperature=1.0, top_k=None, top_p=0.9),
         "top_k_top_p": dict(temperature=0.7, top_k=5, top_p=0.6)}


def test_sample_next_equals_numpy_on_ties():
    """sample_next on logits full of ties (7 distinct values for 20 tokens), one rng per rule: the same
    tokens as numpy_gpt's, so ties rank by id (the stable sort) and top_k/top_p cut in the same place."""
    rows = np.random.default_rng(4).integers(-3, 4, size=(400, 20)) / 2.0      # (N, V)
    results = js_results([{"op": "sample", "logits": rows.tolist(), "seed": "11", **rule} for rule in RULES.values()])
    for (name, rule), tokens in zip(RULES.items(), results):
        rng = np.random.default_rng(11)
        assert tokens == [sample_next(row, rng, **rule) for row in rows], name


def numpy_text(model, prompt, n, seed, rule, use_cache=True):
    """-> (numpy_gpt's text, how many windows it primed with a prefill)"""
    kv = new_kv_cache(model.params, model.config, 1)
    prefills = []
    def prefill(ids):
        prefills.append(len(ids))
        return gpt_prefill(model.params, model.config, np.array([ids]), kv)[0]
    decode = lambda token, pos: gpt_decode(model.params, model.config, np.array([token]), pos, kv)[0]   # noqa: E731
    steps = generate(prefill, decode, prompt, n, model.config.block_size, np.random.default_rng(seed),
                     use_cache=use_cache, **rule)
    return "".join(model.chars[token] for token, _ in steps), len(prefills)


def assert_primed_ahead(js, windows):
    """The page's way (ahead.js) primed every window after the first with the worker's part."""
    assert windows > 2 and js["windows"] == {"primed": windows, "ahead": windows - 1}


@pytest.mark.parametrize("rule", RULES)
def test_text_equals_numpy_past_block_size(tiny, rule):
    """500 characters from the trained tiny model (block_size 16: the window slides about 40 times), for
    three seeds, short prompts and one longer than block_size, with the cache, once with full recomputes,
    and twice the page's way, each next window primed ahead (peek/web/ahead.js)."""
    cases = [(0, [1, 2, 3], True, False), (7, list(range(20)), True, False), (2**40 + 3, [5], True, False),
             (0, [1, 2, 3], False, False), (0, [1, 2, 3], True, True), (7, list(range(20)), True, True)]
    results = js_results([{"op": "generate", "prompt": prompt, "n": 500, "seed": str(seed), "use_cache": use_cache,
                           "ahead": ahead, **RULES[rule]} for seed, prompt, use_cache, ahead in cases], tiny.folder)
    for (seed, prompt, use_cache, ahead), js in zip(cases, results):
        text, windows = numpy_text(tiny, prompt, 500, seed, RULES[rule], use_cache)
        assert js["text"] == text, (seed, use_cache, ahead)
        if ahead:
            assert_primed_ahead(js, windows)


def test_text_equals_numpy_in_the_kids_shape(kid_shaped):
    """500 characters in the kid's shape at temperature 0.8, top_k 10 (block_size 128: the window slides
    about 12 times), plainly and the page's way. The other rules run on the tiny model above, where they
    cost less."""
    prompt = [10, 20, 30, 40]
    plain, ahead = js_results([{"op": "generate", "prompt": prompt, "n": 500, "seed": "5", "ahead": ahead,
                                **RULES["top_k"]} for ahead in (False, True)], kid_shaped.folder)
    text, windows = numpy_text(kid_shaped, prompt, 500, 5, RULES["top_k"])
    assert plain["text"] == ahead["text"] == text
    assert_primed_ahead(ahead, windows)


# ------------------------------------------------------------------------------------------------
# load_weights says what is wrong with a damaged export


def flip_a_byte(folder, manifest):
    t = next(t for t in manifest["tensors"] if t["name"] == "h.1.mlp.c_fc.weight")
    data = bytearray((folder / "weights.bin").read_bytes())
    data[t["offset"] + 37] ^= 0x10
    (folder / "weights.bin").write_bytes(bytes(data))
    return ["h.1.mlp.c_fc.weight", "crc32", "corrupt"]


def truncate(folder, manifest):
    data = (folder / "weights.bin").read_bytes()
    (folder / "weights.bin").write_bytes(data[:-100])
    return [f"{len(data) - 100} bytes", f"says {len(data)}", "truncated"]


def edit_manifest(change):
    def damage(folder, manifest):
        expected = change(manifest)
        (folder / "weights.json").write_text(json.dumps(manifest))
        return expected
    return damage


def new_version(manifest):
    manifest["version"] = 2
    return ["version 2", "reads version 1"]


def wrong_shape(manifest):
    manifest["tensors"][3]["shape"] = [5, 5]                   # h.0.ln_1.bias
    return ["tensor h.0.ln_1.bias is missing or not of shape [24]"]


def not_a_manifest(manifest):
    manifest["format"] = "something else"
    return ['is not a "tiny-llm peek weights" manifest']


@pytest.mark.parametrize("damage", [flip_a_byte, truncate, edit_manifest(new_version), edit_manifest(wrong_shape),
                                    edit_manifest(not_a_manifest)], ids=lambda f: f.__name__)
def test_load_weights_rejects_a_damaged_export(tmp_path, damage):
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=24)
    manifest = write_weights(tmp_path, random_weights(config, seed=0), config, printable_chars(11))
    expected = damage(tmp_path, manifest)
    error = run_js([], tmp_path).get("error")
    assert error is not None, "load_weights accepted a damaged export"
    assert "\n" not in error and all(part in error for part in expected), error
