"""Sampling: the KV cache equals a full recompute, both backends print the same text, the rule keeps to
its allowed set, and every bad input gets its message."""
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from numpy_gpt import GPTConfig, init_params
from numpy_gpt.machinery.checkpoint import save_weights
from numpy_gpt.model import gpt_decode, gpt_prefill, new_kv_cache
from numpy_gpt.sampling import generate, generate_batch, sample_next
from torch_gpt.model import GPT
from torch_gpt.sample import load_model

import parity.compare as pc
from bounds import record_margin
from conftest import ROOT, corpus_path
from test_numpy_cli import SMALL, assert_user_error, run

# parity.compare's tolerances, derived for the kid's forward and backward: the cache only reorders the
# forward's sums, which are fewer
TOL = {np.float64: pc.TOLERANCE["float64"], np.float32: pc.TOLERANCE["float32"]}


def numpy_fns(params, config):
    kv = new_kv_cache(params, config, 1)
    return (lambda ids: gpt_prefill(params, config, np.array([ids]), kv)[0],
            lambda token, pos: gpt_decode(params, config, np.array([token]), pos, kv)[0])


def torch_fns(model):
    kv = model.new_kv_cache(1)
    return (lambda ids: model.prefill(torch.tensor([ids]), kv)[0].numpy(),
            lambda token, pos: model.decode(torch.tensor([token]), pos, kv)[0].numpy())


def trained_weights(config, dtype, seed=0):
    """Weights with some structure: the init plus noise, so logits are far from uniform."""
    rng = np.random.default_rng(seed)
    return {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(dtype)
            for k, v in init_params(config, seed, np.float64).items()}


def run_both_modes(fns_factory, n_new, block_size, prompt, seed, **rule):
    out = {}
    for use_cache in (True, False):
        prefill, decode = fns_factory()
        out[use_cache] = list(generate(prefill, decode, prompt, n_new, block_size, np.random.default_rng(seed),
                                       use_cache=use_cache, **rule))
    return out[True], out[False]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_kv_cache_equals_full_recompute_past_block_size(dtype, backend):
    """Every step's logits, with the cache and with a full forward over the window, through three
    slides of the window (block_size 16, 60 new tokens)."""
    config = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=12)
    params = trained_weights(config, dtype)
    if backend == "numpy":
        factory = lambda: numpy_fns(params, config)       # noqa: E731
    else:
        model = GPT(config, dtype=torch.float64 if dtype == np.float64 else torch.float32)
        model.load_numpy(params)
        factory = lambda: torch_fns(model)                # noqa: E731
    cached, full = run_both_modes(factory, 60, config.block_size, [1, 2, 3, 4, 5], seed=7, temperature=1.0)
    assert [t for t, _ in cached] == [t for t, _ in full]
    for (_, a), (_, b) in zip(cached, full):
        assert np.abs(a - b).max() <= TOL[dtype] * np.abs(b).max()
    assert len({t for t, _ in cached}) > 5          # it really sampled, not one token over and over


def test_long_prompt_and_slides_see_the_right_window():
    """With a prompt longer than block_size, the first logits are those of its last block_size tokens."""
    config = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=1, n_embd=4)
    params = trained_weights(config, np.float64)
    prompt = list(np.random.default_rng(0).integers(0, 7, 30))
    prefill, decode = numpy_fns(params, config)
    (_, first), = list(generate(prefill, decode, prompt, 1, 8, np.random.default_rng(0)))
    expected = numpy_fns(params, config)[0](prompt[-8:])
    np.testing.assert_array_equal(first, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_and_torch_print_the_same_text_from_a_random_init(dtype):
    """float64: the same text by construction (numpy_gpt.sampling); float32: the same for these seeds,
    in which no draw lands within float32 rounding of an edge (see the next test for how rarely one does)."""
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=32)
    params = {k: v.astype(dtype) for k, v in trained_weights(config, np.float32, seed=3).items()}
    model = GPT(config, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    model.load_numpy(params)
    for rule in (dict(temperature=1.0), dict(temperature=0.8, top_k=10), dict(temperature=1.3, top_p=0.9),
                 dict(temperature=0)):
        texts = []
        for prefill, decode in (numpy_fns(params, config), torch_fns(model)):
            texts.append([t for t, _ in generate(prefill, decode, [0, 1, 2], 500, config.block_size,
                                                 np.random.default_rng(11), **rule)])
        assert texts[0] == texts[1], rule
        assert len(texts[0]) == 500


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_batch_writes_what_one_sample_at_a_time_writes(backend):
    """generate_batch over 5 samples at once (float64, through three slides of the window) against 5
    calls of generate, one after the other, from one rng: the same tokens, and logits equal to float64
    rounding. At temperature 0 every sample is the same greedy text."""
    config = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=12)
    params = trained_weights(config, np.float64, seed=5)
    model = GPT(config, dtype=torch.float64)
    model.load_numpy(params)

    def batch_fns(n):
        if backend == "numpy":
            kv = new_kv_cache(params, config, n)
            return (lambda w: gpt_prefill(params, config, w, kv), lambda t, pos: gpt_decode(params, config, t, pos, kv))
        kv = model.new_kv_cache(n)
        return (lambda w: model.prefill(torch.from_numpy(w), kv).numpy(),
                lambda t, pos: model.decode(torch.from_numpy(t), pos, kv).numpy())

    one = (lambda: numpy_fns(params, config)) if backend == "numpy" else (lambda: torch_fns(model))
    for rule in (dict(temperature=1.0), dict(temperature=0.8, top_k=5), dict(temperature=1.3, top_p=0.9),
                 dict(temperature=0)):
        rng = np.random.default_rng(3)
        together = list(generate_batch(*batch_fns(5), [1, 2, 3], 5, 60, config.block_size, rng, **rule))
        after = rng.random()
        rng = np.random.default_rng(3)
        apart = [list(generate(*one(), [1, 2, 3], 60, config.block_size, rng, **rule)) for _ in range(5)]
        assert rng.random() == after                    # the batch drew exactly the numbers the 5 runs drew
        for i, sample in enumerate(apart):
            assert [int(tokens[i]) for tokens, _ in together] == [t for t, _ in sample], (rule, i)
            for (_, a), (_, b) in zip(together, sample):
                assert np.abs(a[i] - b).max() <= TOL[np.float64] * np.abs(b).max()   # parity's float64 bar
        texts = {tuple(t for t, _ in sample) for sample in apart}
        assert len(texts) == (1 if rule["temperature"] == 0 else 5), rule


def kept_cdf(logits, temperature):
    """-> (token ids, most likely first; their cumulative distribution, ending at 1): what sample_next
    maps its uniform draw through, without top-k or top-p."""
    logits = np.asarray(logits, dtype=np.float64)
    order = np.argsort(-logits, kind="stable")
    probs = np.exp(logits[order] / temperature - logits[order[0]] / temperature)
    cdf = np.cumsum(probs)
    return order, cdf / cdf[-1]


def flip_probability(a, b):
    """-> the probability that one uniform draw picks different tokens through a's and b's CDFs: the
    total length of the intervals of [0, 1) where their inverse CDFs disagree."""
    (order_a, cdf_a), (order_b, cdf_b) = a, b
    edges = np.unique(np.concatenate([[0.0, 1.0], cdf_a, cdf_b]))
    mids = (edges[:-1] + edges[1:]) / 2
    pick_a = order_a[np.minimum(np.searchsorted(cdf_a, mids, side="right"), len(cdf_a) - 1)]
    pick_b = order_b[np.minimum(np.searchsorted(cdf_b, mids, side="right"), len(cdf_b) - 1)]
    return float(np.diff(edges)[pick_a != pick_b].sum())


def flip_bound(logits, delta, temperature):
    """-> a bound on flip_probability between logits and any logits within delta of them, entry by entry.

    p = softmax(z / t) moves by dp_i = p_i (dz_i - sum_j p_j dz_j) / t, so sum_i |dp_i| <= 2 delta / t,
    and each of the K - 1 inner edges of the kept CDF by at most that: while the order of the tokens
    stays, the draws that disagree lie between an edge and its moved self, 2 (K - 1) delta / t in all.
    Two tokens whose logits lie within 2 delta may swap places; each such adjacent pair adds at most
    the mass of both."""
    order, cdf = kept_cdf(logits, temperature)
    z = np.asarray(logits, dtype=np.float64)[order]
    p = np.diff(np.concatenate([[0.0], cdf]))
    near = np.abs(np.diff(z)) <= 2 * delta
    return 2 * (len(z) - 1) * delta / temperature + float((p[:-1] + p[1:])[near].sum())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_how_rarely_the_backends_logits_flip_a_draw(dtype):
    """The contract: along 500 characters, with both backends computing from the same context, each
    step's logits agree within parity's tolerance, and the expected number of characters the two would
    draw differently (the sum over steps of flip_probability) stays under what that tolerance allows
    (flip_bound). Not zero: exact equality of the texts is a matter of how rare a flip is, never of
    construction. pytest -s prints the measured figure."""
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=32)
    params = {k: v.astype(dtype) for k, v in trained_weights(config, np.float32, seed=3).items()}
    model = GPT(config, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    model.load_numpy(params)
    (np_prefill, _), (torch_prefill, _) = numpy_fns(params, config), torch_fns(model)
    context, rng, expected_flips, bound, worst = [0, 1, 2], np.random.default_rng(11), 0.0, 0.0, 0.0
    for _ in range(500):
        window = context[-config.block_size:]
        za, zb = np_prefill(window), torch_prefill(window)
        delta = TOL[dtype] * np.abs(zb).max()
        worst = max(worst, np.abs(za - zb).max() / delta)
        expected_flips += flip_probability(kept_cdf(za, 0.8), kept_cdf(zb, 0.8))
        bound += flip_bound(zb, delta, 0.8)
        context.append(sample_next(np_prefill(window), rng, 0.8))
    print(f"\n  {np.dtype(dtype).name}: {expected_flips:.1e} of 500 characters expected to differ "
          f"(bound {bound:.1e}); logits within {worst:.1e} of their bar")
    record_margin("test_how_rarely_the_backends_logits_flip_a_draw", worst, f"{np.dtype(dtype).name} logits")
    assert worst <= 1
    assert 0 < expected_flips <= bound
    # and the measure sees a flip: two CDFs 1e-6 apart at one edge disagree on 1e-6 of the draws
    order = np.arange(3)
    assert flip_probability((order, np.array([0.5, 0.8, 1.0])), (order, np.array([0.5 + 1e-6, 0.8, 1.0]))) \
        == pytest.approx(1e-6)


# ------------------------------------------------------------------------------------------------
# the rule


def test_temperature_zero_is_greedy_and_draws_nothing():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert sample_next(np.array([0.1, 3.0, -2.0, 2.9]), rng, temperature=0) == 1
    assert rng.bit_generator.state == state


def test_frequencies_follow_the_softmax():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    rng = np.random.default_rng(1)
    n = 40_000
    counts = np.bincount([sample_next(logits, rng, temperature=1.0) for _ in range(n)], minlength=4)
    p = np.exp(logits) / np.exp(logits).sum()
    # each count is binomial: within 5 standard deviations
    assert np.all(np.abs(counts - n * p) <= 5 * np.sqrt(n * p * (1 - p))), (counts, n * p)
    hot = np.bincount([sample_next(logits, rng, temperature=2.0) for _ in range(n)], minlength=4)
    assert hot[3] > 2 * counts[3]                               # a higher temperature flattens


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30), st.integers(1, 30), st.floats(0.05, 3.0), st.integers(0, 2**32 - 1))
def test_top_k_never_draws_outside_the_k_most_likely(V, k, temperature, seed):
    k = min(k, V)
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(V) * 3
    allowed = set(np.argsort(-logits, kind="stable")[:k].tolist())
    draws = {sample_next(logits, rng, temperature, top_k=k) for _ in range(300)}
    assert draws <= allowed
    if k == 1:
        assert draws == {int(np.argmax(logits))}


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30), st.floats(0.01, 1.0), st.floats(0.05, 3.0), st.integers(0, 2**32 - 1))
def test_top_p_never_draws_outside_the_nucleus(V, top_p, temperature, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(V) * 3
    # the nucleus, computed here by brute force: the fewest most likely tokens whose mass reaches top_p
    p = np.exp(logits / temperature - (logits / temperature).max())
    p /= p.sum()
    order = sorted(range(V), key=lambda i: (-p[i], i))
    nucleus, mass = set(), 0.0
    for i in order:
        nucleus.add(i)
        mass += p[i]
        if mass >= top_p:
            break
    draws = {sample_next(logits, rng, temperature, top_p=top_p) for _ in range(300)}
    assert draws <= nucleus


def test_top_k_and_top_p_together():
    logits = np.log(np.array([0.5, 0.3, 0.1, 0.06, 0.04]))
    rng = np.random.default_rng(0)
    draws = {sample_next(logits, rng, 1.0, top_k=3, top_p=0.7) for _ in range(2000)}
    assert draws == {0, 1}           # top-3 renormalized: 0.556, 0.333, ...; 0.7 is reached at the second


# ------------------------------------------------------------------------------------------------
# the commands


@pytest.fixture(scope="module")
def kid(tmp_path_factory):
    """A small trained checkpoint, as the trainer writes it (kid.npz and kid.pt): 300 steps at tiny
    sizes, a few seconds, so that the tests of the commands never depend on out/kid.npz."""
    out = tmp_path_factory.mktemp("kid")
    text = out / "small.txt"
    text.write_text(corpus_path().read_text(encoding="utf-8")[:8000], encoding="utf-8")
    result = run("-m", "torch_gpt.train", "--device", "cpu", "--data", str(text), "--out", str(out / "run"),
                 *SMALL, "--steps", "300", "--eval-interval", "300", "--lr", "1e-2")
    assert result.returncode == 0, result.stderr
    return out / "run"


BACKENDS = ["numpy_gpt.sample", "torch_gpt.sample"]


def test_same_flags_in_both_commands():
    flags = [{w for w in run("-m", m, "--help").stdout.split() if w.startswith("--")} for m in BACKENDS]
    assert flags[0] == flags[1]
    assert {"--checkpoint", "--prompt", "--prompt-file", "--max-new-tokens", "--temperature", "--top-k", "--top-p",
            "--seed", "--num-samples", "--dtype", "--help"} <= flags[0]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("flags", [[], ["--temperature", "1.2", "--top-k", "20"], ["--top-p", "0.8", "--seed", "3"],
                                   ["--temperature", "0"]])
def test_both_commands_print_the_same_text(kid, flags, dtype):
    texts = [run("-m", m, "--checkpoint", str(kid / "kid.npz"), "--prompt", "ROMEO:", "--max-new-tokens", "500",
                 "--dtype", dtype, *flags) for m in BACKENDS]
    assert texts[0].returncode == texts[1].returncode == 0, texts[0].stderr + texts[1].stderr
    assert texts[0].stdout == texts[1].stdout
    assert texts[0].stdout.startswith("ROMEO:") and len(texts[0].stdout) == len("ROMEO:") + 500 + 1


def test_torch_reads_kid_pt_too(kid):
    a = run("-m", "torch_gpt.sample", "--checkpoint", str(kid / "kid.pt"), "--max-new-tokens", "100")
    b = run("-m", "numpy_gpt.sample", "--checkpoint", str(kid / "kid.npz"), "--max-new-tokens", "100")
    assert a.returncode == 0 and a.stdout == b.stdout


def test_empty_prompt_starts_from_a_newline_and_num_samples(kid):
    a = run("-m", "numpy_gpt.sample", "--checkpoint", str(kid / "kid.npz"), "--max-new-tokens", "40",
            "--num-samples", "3")
    b = run("-m", "numpy_gpt.sample", "--checkpoint", str(kid / "kid.npz"), "--max-new-tokens", "40",
            "--num-samples", "3", "--prompt", "")
    assert a.returncode == 0 and a.stdout == b.stdout
    samples = a.stdout.rstrip("\n").split("\n\n---------------\n\n")
    assert len(samples) == 3 and len(set(samples)) == 3 and all(len(s) == 40 for s in samples)


@pytest.mark.parametrize("module", BACKENDS)
def test_num_samples_in_batches_print_what_one_at_a_time_prints(kid, module, monkeypatch, capsys):
    """--num-samples 5, drawn 2 at a time (the batches 2, 2 and 1), prints what 1 at a time prints
    (float64, whose text does not depend on how the products are split)."""
    import importlib

    import numpy_gpt.machinery.cli
    main = importlib.import_module(module).main
    printed = {}
    for batch in (1, 2, 32):
        monkeypatch.setattr(numpy_gpt.machinery.cli, "SAMPLE_BATCH", batch)
        main(["--checkpoint", str(kid / "kid.npz"), "--max-new-tokens", "150", "--num-samples", "5",
              "--dtype", "float64", "--prompt", "ROMEO:"])
        printed[batch] = capsys.readouterr().out
    assert printed[1] == printed[2] == printed[32]
    samples = printed[1].rstrip("\n").split("\n\n---------------\n\n")
    assert len(samples) == 5 and len(set(samples)) == 5 and all(s.startswith("ROMEO:") for s in samples)


def test_prompt_file(kid, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("ROMEO:\nWhat", encoding="utf-8")
    a = run("-m", "torch_gpt.sample", "--checkpoint", str(kid / "kid.npz"), "--prompt-file", str(prompt),
            "--max-new-tokens", "30")
    b = run("-m", "torch_gpt.sample", "--checkpoint", str(kid / "kid.npz"), "--prompt", "ROMEO:\nWhat",
            "--max-new-tokens", "30")
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.startswith("ROMEO:\nWhat")


def test_dtype_reaches_the_model(kid, monkeypatch):
    import numpy_gpt.sample
    seen = []
    real = numpy_gpt.sample.gpt_prefill
    monkeypatch.setattr(numpy_gpt.sample, "gpt_prefill", lambda params, *a: seen.append(params["wte.weight"].dtype)
                        or real(params, *a))
    for dtype in ("float64", "float32"):
        numpy_gpt.sample.main(["--checkpoint", str(kid / "kid.npz"), "--max-new-tokens", "1", "--dtype", dtype])
    assert seen == [np.float64, np.float32]
    for path in (kid / "kid.npz", kid / "kid.pt"):
        m32, m64 = load_model(path)[0], load_model(path, torch.float64)[0]
        assert m64.wte.weight.dtype == torch.float64 and m32.wte.weight.dtype == torch.float32
        assert torch.equal(m64.wte.weight, m32.wte.weight.double())    # the same float32 weights, widened


def test_output_streams_character_by_character(kid):
    """The first characters arrive while the process is still generating."""
    proc = subprocess.Popen([sys.executable, "-m", "numpy_gpt.sample", "--checkpoint", str(kid / "kid.npz"),
                             "--max-new-tokens", "1000000", "--prompt", "A"], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        first, deadline = b"", time.monotonic() + 120
        while len(first) < 20 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunk = os.read(proc.stdout.fileno(), 20 - len(first))
                if not chunk:
                    break
                first += chunk
        assert len(first) == 20 and proc.poll() is None, first
    finally:
        proc.kill()
        proc.wait(timeout=60)


@pytest.mark.parametrize("module", BACKENDS)
@pytest.mark.parametrize("flags, message", [
    (["--prompt", "Hello ☃ world ü"], "the prompt has 2 character(s) not in the model's"),
    (["--temperature", "-0.5"], "--temperature must be 0 (greedy) or more, got -0.5"),
    (["--top-k", "0"], "--top-k must be at least 1, got 0"),
    (["--top-k", "1000"], "--top-k 1000 is larger than the vocabulary"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--max-new-tokens", "-1"], "--max-new-tokens must be 0 or more, got -1"),
    (["--prompt-file", "/nonexistent/prompt.txt"], "prompt file not found: /nonexistent/prompt.txt"),
])
def test_bad_sampling_input(kid, module, flags, message):
    result = run("-m", module, "--checkpoint", str(kid / "kid.npz"), *flags)
    assert_user_error(result, message)
    assert result.stdout == ""


def test_unknown_characters_are_named(kid):
    result = run("-m", "numpy_gpt.sample", "--checkpoint", str(kid / "kid.npz"), "--prompt", "ROMEO ☃")
    assert_user_error(result, "'☃'")


@pytest.mark.parametrize("module", BACKENDS)
def test_bad_checkpoints(kid, module, tmp_path):
    assert_user_error(run("-m", module, "--checkpoint", str(tmp_path / "none.npz")), "checkpoint not found")
    data = (kid / "kid.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 3])
    assert_user_error(run("-m", module, "--checkpoint", str(tmp_path / "cut.npz")), "is truncated or not a tiny-llm")
    np.savez(tmp_path / "foreign.npz", something=np.zeros(3))
    assert_user_error(run("-m", module, "--checkpoint", str(tmp_path / "foreign.npz")), "is not a tiny-llm weights file")


def test_truncated_kid_pt(kid, tmp_path):
    data = (kid / "kid.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert_user_error(run("-m", "torch_gpt.sample", "--checkpoint", str(tmp_path / "cut.pt")),
                      "is truncated or not a tiny-llm weights file or training state")


def test_vocabulary_without_newline_needs_a_prompt(tmp_path):
    config = GPTConfig(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=4)
    save_weights(tmp_path / "abc.npz", init_params(config), config, "abc")
    assert_user_error(run("-m", "numpy_gpt.sample", "--checkpoint", str(tmp_path / "abc.npz")),
                      "an empty prompt starts from a newline, which this vocabulary lacks")
    ok = run("-m", "numpy_gpt.sample", "--checkpoint", str(tmp_path / "abc.npz"), "--prompt", "ab", "--max-new-tokens", "9")
    assert ok.returncode == 0 and len(ok.stdout) == 2 + 9 + 1 and set(ok.stdout.strip()) <= set("abc")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_trained_kid_writes_the_same_500_characters_in_both_backends(kid, dtype):
    """The README's command, on the checkpoint this module trains (always there, unlike out/kid.npz)."""
    texts = [run("-m", m, "--checkpoint", str(kid / "kid.npz"), "--prompt", "ROMEO:", "--max-new-tokens", "500",
                 "--seed", "7", "--dtype", dtype) for m in BACKENDS]
    assert texts[0].returncode == texts[1].returncode == 0, texts[0].stderr + texts[1].stderr
    assert texts[0].stdout == texts[1].stdout and len(texts[0].stdout) == len("ROMEO:") + 500 + 1
