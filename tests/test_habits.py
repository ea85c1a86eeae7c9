"""peek.habits: each head's habits against hand-made attention patterns whose answers are known, against a
plain loop over queries, and on a model's own attention (numpy_gpt's forward, checked by hand at layer 0)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_gpt import GPTConfig, init_params
from numpy_gpt.data import CharTokenizer, get_batch
from numpy_gpt.model import gpt_backward, gpt_forward
from numpy_gpt.optim import adamw_init, adamw_step, lr_at
from peek import habits
from peek.habits import CLEAR, HABITS, head_habits, habits_for_kid

from conftest import corpus_path

TEXT = "the cat sat on the mat.\nand the rat ate at ten.\nthat cat"
CHARS = "".join(sorted(set(TEXT)))
IDS = np.array([CHARS.index(c) for c in TEXT])
T = len(TEXT)


def last_space_before(text, t):
    """The last position s < t holding a space or newline, or None."""
    return max((s for s in range(t) if text[s] in " \n"), default=None)


def pattern(kind, text=TEXT):
    """A hand-made (T, T) attention: each row sums to 1, nothing above the diagonal."""
    n = len(text)
    att = np.zeros((n, n))
    for t in range(n):
        if kind == "previous":
            att[t, max(t - 1, 0)] = 1
        elif kind == "self":
            att[t, t] = 1
        elif kind == "first":
            att[t, 0] = 1
        elif kind == "uniform":
            att[t, :t + 1] = 1 / (t + 1)
        elif kind.startswith("window"):                 # evenly over the last w positions, itself included
            w = int(kind[len("window"):])
            att[t, max(0, t - w + 1):t + 1] = 1 / min(w, t + 1)
        elif kind == "same_char":                       # evenly over earlier copies, else itself
            copies = [s for s in range(t) if text[s] == text[t]]
            att[t, copies or [t]] = 1 / max(len(copies), 1)
        elif kind == "last_space":                      # the last space or newline, else itself
            s = last_space_before(text, t)
            att[t, t if s is None else s] = 1
    return att


def one_head(kind):
    return head_habits(pattern(kind)[None, None], IDS, CHARS)[0][0]


@pytest.mark.parametrize("kind, label", [
    ("previous", "looks at the previous character"),
    ("self", "looks at the character itself"),
    ("first", "looks at the first character"),
    ("same_char", "looks at earlier copies of the same character"),
    ("last_space", "looks at the last space or newline"),
])
def test_a_head_with_one_habit_gets_it_at_100_percent(kind, label):
    head = one_head(kind)
    assert (head["habit"], head["label"], head["figure"]) == (kind, label, 1.0), head
    assert head[kind] == 1.0
    assert habits.describe(head) == f"{label}, 100% of its weight"


def test_exact_figures_of_the_hand_made_heads():
    """Every other number of the clear heads, worked out by hand over the T - 1 queries t >= 1."""
    prev = one_head("previous")
    assert prev["mean_distance"] == 1.0 and prev["self"] == 0.0
    assert prev["first"] == round(1 / (T - 1), 4)                    # only at t = 1 is t - 1 the first
    first = one_head("first")
    assert first["mean_distance"] == round(sum(range(1, T)) / (T - 1), 4) and first["previous"] == round(1 / (T - 1), 4)
    me = one_head("self")
    assert me["mean_distance"] == 0.0 and me["previous"] == me["first"] == 0.0


def test_uniform_attention_has_no_clear_habit():
    """Even attention puts exactly its chance on every habit: no excess, so the label is the spread and the
    figure the mean distance, t / 2 averaged over t = 1 .. T - 1."""
    head = one_head("uniform")
    for habit in HABITS:
        assert head[habit] == head["chance"][habit], habit
    assert head["habit"] == "spread" and head["label"] == "spreads its attention"
    assert head["figure"] == head["mean_distance"] == round(sum(t / 2 for t in range(1, T)) / (T - 1), 4)
    assert habits.describe(head) == f"spreads its attention, {head['figure']:.1f} characters back on average"
    # the chance of the previous character is the mean of 1 / (t + 1) over the queries
    assert head["chance"]["previous"] == round(sum(1 / (t + 1) for t in range(1, T)) / (T - 1), 4)


@pytest.mark.parametrize("w, habit", [(6, "near"), (20, "spread")])
def test_a_head_without_a_habit_is_near_or_spread_by_how_far_back_it_looks(w, habit):
    """Even attention over the last w characters favours no habit by CLEAR, so its label is its distance:
    "near" when its mean distance is at most NEAR of even attention's (t / 2 averaged over the queries),
    else "spread". Over the last 6 it looks about 2.4 back, against even attention's 13.8."""
    head = one_head(f"window{w}")
    assert head["chance_distance"] == round(sum(t / 2 for t in range(1, T)) / (T - 1), 4)
    assert (head["mean_distance"] <= habits.NEAR * head["chance_distance"]) == (habit == "near")
    assert head["habit"] == habit and head["figure"] == head["mean_distance"]
    assert habits.describe(head) == f"{habits.LABELS[habit]}, {head['figure']:.1f} characters back on average"


@pytest.mark.parametrize("weight, clear", [(CLEAR - 0.05, False), (CLEAR + 0.05, True)])
def test_a_habit_is_clear_from_CLEAR_beyond_chance(weight, clear):
    """Uniform attention with `weight` moved onto the previous character: its excess over chance is weight
    times (1 - chance), so the head turns from spread to previous as the excess passes CLEAR."""
    att = (1 - weight) * pattern("uniform") + weight * pattern("previous")
    head = head_habits(att[None, None], IDS, CHARS)[0][0]
    excess = head["previous"] - head["chance"]["previous"]
    assert math.isclose(excess, weight * (1 - head["chance"]["previous"]), abs_tol=2e-4)   # 4-decimal rounding
    assert head["habit"] == ("previous" if clear and excess >= CLEAR else "spread"), head
    assert (excess >= CLEAR) == clear


def test_layers_heads_and_sequences():
    """(N, L, H, T, T) input: the heads keep their places, and N sequences pool their queries."""
    kinds = [["previous", "first"], ["uniform", "last_space"]]
    att = np.array([[pattern(k) for k in row] for row in kinds])     # (L, H, T, T)
    result = head_habits(np.stack([att, att]), np.stack([IDS, IDS]), CHARS)
    assert [[h["habit"] for h in row] for row in result] == [["previous", "first"], ["spread", "last_space"]]
    assert [[(h["layer"], h["head"]) for h in row] for row in result] == [[(0, 0), (0, 1)], [(1, 0), (1, 1)]]
    assert result == head_habits(att, IDS, CHARS)                    # the same sequence twice: the same averages


def loop_habits(att, texts):
    """The shares and mean distance of one head, written as a plain loop over sequences and queries."""
    sums = {h: [0.0, 0] for h in (*HABITS, "mean_distance")}
    for a, text in zip(att, texts):
        for t in range(1, len(text)):
            def add(name, value):
                sums[name][0] += value
                sums[name][1] += 1
            add("mean_distance", sum(a[t, s] * (t - s) for s in range(t + 1)))
            add("previous", a[t, t - 1])
            add("self", a[t, t])
            add("first", a[t, 0])
            copies = [s for s in range(t) if text[s] == text[t]]
            if copies:
                add("same_char", sum(a[t, s] for s in copies))
            s = last_space_before(text, t)
            if s is not None:
                add("last_space", a[t, s])
    return {h: (total / n if n else 0.0) for h, (total, n) in sums.items()}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3), length=st.integers(2, 20))
def test_equals_a_plain_loop_on_random_attention(seed, n, length):
    rng = np.random.default_rng(seed)
    alphabet = "ab \n"
    texts = ["".join(rng.choice(list(alphabet), length)) for _ in range(n)]
    scores = 3 * rng.standard_normal((n, length, length))
    scores[:, np.triu(np.ones((length, length), bool), k=1)] = -np.inf
    att = np.exp(scores - scores.max(axis=-1, keepdims=True))
    att /= att.sum(axis=-1, keepdims=True)                            # (n, T, T) causal, rows sum to 1
    ids = np.array([[alphabet.index(c) for c in text] for text in texts])
    head = head_habits(att[:, None, None], ids, alphabet)[0][0]
    expected = loop_habits(att, texts)
    for name, value in expected.items():
        assert abs(head[name] - value) <= 5e-5 + 1e-12, (name, head[name], value)   # rounded to 4 decimals


def test_position_0_alone_is_refused():
    with pytest.raises(ValueError, match="at least 2 positions"):
        head_habits(np.ones((1, 1, 1, 1)), np.array([0]), "a")


# ------------------------------------------------------------------------------------------------
# a model's heads


def train_tiny(steps=600):
    """numpy_gpt trained in float64 on 6,000 characters of tinyshakespeare, 2 layers of 2 heads, 600 AdamW
    steps (about 5 seconds) -> (params, config, chars, the ids of the corpus's next 2,000 characters, which
    it never saw)."""
    text = corpus_path().read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_text(text)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=24)
    ids = tokenizer.encode(text[:8000])
    train, held_out = ids[:6000], ids[6000:]
    params, rng = init_params(config, seed=0, dtype=np.float64), np.random.default_rng(0)
    opt = adamw_init(params)
    for step in range(steps):
        x, y = get_batch(train, 16, config.block_size, rng)
        cache = gpt_forward(params, config, x, y)[-1]
        adamw_step(params, gpt_backward(params, config, cache), opt, lr_at(step, 1e-2, 1e-3, 30, steps))
    return params, config, tokenizer.chars, held_out


@pytest.fixture(scope="module")
def tiny():
    return train_tiny()


def layer0_attention_by_hand(params, config, ids):
    """ids (N, T) -> layer 0's attention (N, H, T, T), written out from the weights: embeddings, LayerNorm,
    the query and key projections, the scaled scores, the causal mask and the softmax."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    N, T = ids.shape
    C, H = config.n_embd, config.n_head
    D = C // H
    x = p["wte.weight"][ids] + p["wpe.weight"][:T]                      # (N, T, C)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    h = (x - mu) / np.sqrt(var + 1e-5) * p["h.0.ln_1.weight"] + p["h.0.ln_1.bias"]
    qkv = h @ p["h.0.attn.c_attn.weight"].T + p["h.0.attn.c_attn.bias"]   # (N, T, 3C)
    q = qkv[..., :C].reshape(N, T, H, D).transpose(0, 2, 1, 3)          # (N, H, T, D)
    k = qkv[..., C:2 * C].reshape(N, T, H, D).transpose(0, 2, 1, 3)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)                 # (N, H, T, T)
    scores[..., np.triu(np.ones((T, T), bool), k=1)] = -np.inf
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_habits_for_kid_measures_the_models_own_attention(tiny):
    params, config, chars, held_out = tiny
    result = habits_for_kid(params, config, chars, held_out, n=4)
    assert [[(h["layer"], h["head"]) for h in row] for row in result] == \
        [[(l, h) for h in range(config.n_head)] for l in range(config.n_layer)]
    ids = habits.windows_of(held_out, config.block_size, 4)
    assert ids.shape == (4, config.block_size) and ids[0, 0] == held_out[0] and ids[-1, -1] == held_out[-1]
    att = habits.model_attention(params, config, ids)                   # (N, L, H, T, T)
    assert np.allclose(att.sum(-1), 1, atol=1e-12, rtol=0) and not np.triu(att, k=1).any()
    # layer 0's attention, computed by hand, gives the same habits
    hand = layer0_attention_by_hand(params, config, ids)
    assert np.abs(att[:, 0] - hand).max() < 1e-12
    assert result[0] == head_habits(hand[:, None], ids, chars)[0]


def test_training_gives_the_heads_habits(tiny):
    """At its init every head spreads its attention almost evenly (its scores are near 0: no habit beats
    chance by 0.05); after 600 steps the tiny model's first head looks at the previous character, 0.28
    beyond chance measured, more than CLEAR."""
    params, config, chars, held_out = tiny
    excess = lambda h: max(h[x] - h["chance"][x] for x in HABITS)
    fresh = [h for row in habits_for_kid(init_params(config, seed=0), config, chars, held_out, n=8) for h in row]
    assert all(h["habit"] == "spread" and excess(h) < 0.05 for h in fresh), fresh
    trained = habits_for_kid(params, config, chars, held_out, n=8)
    assert trained[0][0]["habit"] == "previous" and excess(trained[0][0]) > CLEAR, trained[0][0]


def test_val_ids_are_the_last_tenth():
    text = "abcdefghij" * 10
    assert "".join("abcdefghij"[i] for i in habits.val_ids(text, "abcdefghij")) == text[90:]


def test_peek_show_prints_the_habit_table(tiny, tmp_path):
    """peek show's table: one row per layer and head, with the clearest habit and its figure as head_habits
    measured them on the validation split of the text passed with --data."""
    from numpy_gpt.machinery.checkpoint import save_weights
    from test_numpy_cli import run
    params, config, chars, held_out = tiny
    text = corpus_path().read_text(encoding="utf-8")                  # the tiny model's vocabulary is all of it
    save_weights(tmp_path / "kid.npz", params, config, chars)
    result = run("-m", "peek", "show", "--checkpoint", str(tmp_path / "kid.npz"), "--data", str(corpus_path()))
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("What each head does")[1].splitlines()
    expected = habits_for_kid(params, config, chars, habits.val_ids(text, chars))
    rows = [line.split() for line in table if line.startswith("  L")]
    assert len(rows) == config.n_layer * config.n_head
    for row, head in zip(rows, [h for layer in expected for h in layer]):
        assert row[:2] == [f"L{head['layer']}", f"H{head['head']}"]
        assert " ".join(row).count(head["label"]) == 1
        assert f"{head['mean_distance']:.1f}" in row, (row, head)
        if head["habit"] != "spread":
            assert f"{100 * head['figure']:.0f}%" in row, (row, head)
    assert "Even attention would give previous" in result.stdout
