"""What each attention head does, measured: its habits on real held-out text.

Shape key: N sequences, L layers, H heads, T time (query and key positions), C channels, V vocab.

A head's attention gives each query position t a weight a_t(s) on every visible position s <= t, and
the weights of a row sum to 1. A habit is a set of positions that a head may favour; its share is the
weight the head puts there, averaged over the query positions where the habit can be seen at all:

    previous     s = t - 1, the character just before
    self         s = t, the character itself
    first        s = 0, the first position of the text the model sees
    same_char    every s < t holding the same character as t (queries with one earlier)
    last_space   the last space or newline before t (queries with one earlier)

Query position 0 sees only itself, so it shows no habit and is left out of every average: every
habit is measured over queries t >= 1 (and same_char and last_space only over those that have an
earlier same character, or an earlier space or newline). Habits can overlap: at t = 1 the previous
character is also the first, and a space's last space is also an earlier same character.

mean_distance is how far back the head looks, in characters: sum_s a_t(s) (t - s), averaged over
queries t >= 1.

The clearest habit. A head that spreads its weight evenly over the t + 1 positions it can see still
puts 1/(t + 1) on the previous character: more than half of it at t = 1, though it favours nothing.
So a share alone does not say whether a head prefers a habit. The clearest habit is the one whose
share most exceeds the share that even attention over the same visible positions would give it
(its `chance`, averaged over the same queries): the weight the head puts there beyond what spreading
would. When no habit exceeds its chance by at least CLEAR (a fifth of the head's weight), the head
has no clear habit, and its label says how far back it looks on average instead: "near" when that is
at most NEAR of how far even attention would look (t / 2 at query t, averaged like mean_distance),
else "spread".
"""
import numpy as np

from numpy_gpt.model import gpt_forward

HABITS = ("previous", "self", "first", "same_char", "last_space")
LABELS = {"previous": "looks at the previous character",
          "self": "looks at the character itself",
          "first": "looks at the first character",
          "same_char": "looks at earlier copies of the same character",
          "last_space": "looks at the last space or newline",
          "near": "looks at the last few characters",
          "spread": "spreads its attention"}
DISTANCE_HABITS = ("near", "spread")       # no clear habit: the figure is the mean distance back
SPACES = (" ", "\n")
CLEAR = 0.2        # a habit is clear when at least this share of the weight goes there beyond chance
NEAR = 0.25        # "near": at most a quarter of even attention's mean distance back
WINDOWS = 16       # sequences of held-out text that habits_for_kid measures on


def habit_masks(ids, chars):
    """ids (N, T) -> for each habit, (marks (N, T, T), counted (N, T)): marks[n, t, s] is 1 where key
    position s belongs to the habit for query t; counted[n, t] says whether query t counts for it."""
    N, T = ids.shape
    t, s = np.arange(T)[:, None], np.arange(T)[None, :]             # (T, 1), (1, T)
    earlier = np.broadcast_to(s < t, (N, T, T))                     # (N, T, T) strictly before the query
    after_first = np.broadcast_to(np.arange(T) >= 1, (N, T))       # (N, T)

    def one(m):                                                     # (T, T) -> (N, T, T) of 0s and 1s
        return np.broadcast_to(m, (N, T, T)).astype(np.float64)
    same = earlier & (ids[:, :, None] == ids[:, None, :])            # (N, T, T)
    is_space = np.isin(ids, [chars.index(c) for c in SPACES if c in chars])      # (N, T)
    spaces_before = earlier & is_space[:, None, :]                  # (N, T, T) spaces at s < t
    last = np.where(spaces_before, s, -1).max(axis=2)                # (N, T) the last one's position, or -1
    return {
        "previous": (one(s == t - 1), after_first),
        "self": (one(s == t), after_first),
        "first": (one(s == 0), after_first),
        "same_char": (same.astype(np.float64), after_first & same.any(axis=2)),
        "last_space": ((s[None] == last[:, :, None]).astype(np.float64), after_first & (last >= 0)),
    }


def head_habits(att, ids, chars):
    """att (L, H, T, T) or (N, L, H, T, T) attention (each row sums to 1, nothing above the diagonal),
    ids (T,) or (N, T) the characters' ids, chars the vocabulary -> a list over layers of lists over
    heads of dicts:

        layer, head       the head
        mean_distance     how far back it looks on average, in characters
        previous, self, first, same_char, last_space
                          its share of the weight on each habit (module docstring)
        chance            {habit: the share even attention over the visible positions would give}
        chance_distance   how far back even attention would look, on average
        habit             the clearest habit's name, or "near" or "spread" when no habit is clear
        label             that habit in plain words, e.g. "looks at the previous character"
        figure            the clearest habit's share (0.83 is 83% of the head's weight), or, for
                          "near" and "spread", mean_distance in characters
    Every number is a plain float, rounded to 4 decimals.
    """
    att, ids = np.asarray(att, dtype=np.float64), np.asarray(ids)
    if att.ndim == 4:
        att, ids = att[None], ids[None]
    N, L, H, T, _ = att.shape                                        # att (N, L, H, T, T), ids (N, T)
    if T < 2:
        raise ValueError("habits need at least 2 positions: position 0 sees only itself")
    queries = np.arange(T)
    visible = 1.0 / (queries + 1)                                    # (T,) even attention's weight per position
    distance = np.maximum(queries[:, None] - queries[None, :], 0)    # (T, T) t - s, 0 above the diagonal
    after_first = queries >= 1                                       # (T,)
    mean_distance = (att * distance).sum(axis=-1)[..., after_first].mean(axis=(0, 3))    # (L, H)
    chance_distance = float((queries / 2)[after_first].mean())      # even attention looks t / 2 back
    shares, chance = {}, {}
    for habit, (marks, counted) in habit_masks(ids, chars).items():
        per_query = np.einsum("nlhts,nts->lhnt", att, marks)        # (L, H, N, T) weight on the habit
        even = marks.sum(axis=2) * visible                           # (N, T) even attention's weight there
        n = counted.sum()
        shares[habit] = (per_query * counted).sum(axis=(2, 3)) / n if n else np.zeros((L, H))   # (L, H)
        chance[habit] = float((even * counted).sum() / n) if n else 0.0
    result = []
    for l in range(L):
        row = []
        for h in range(H):
            head = {"layer": l, "head": h, "mean_distance": round(float(mean_distance[l, h]), 4)}
            head.update({habit: round(float(shares[habit][l, h]), 4) for habit in HABITS})
            head["chance"] = {habit: round(chance[habit], 4) for habit in HABITS}
            head["chance_distance"] = round(chance_distance, 4)
            head.update(clearest(head))
            row.append(head)
        result.append(row)
    return result


def clearest(head):
    """A head's habits -> {"habit", "label", "figure"}: the habit whose share most exceeds its chance,
    when that excess is at least CLEAR; else "near" or "spread", with the mean distance as the figure."""
    excess = {habit: head[habit] - head["chance"][habit] for habit in HABITS}
    best = max(HABITS, key=lambda habit: excess[habit])             # ties go to the first in HABITS
    if excess[best] < CLEAR:
        near = "chance_distance" in head and head["mean_distance"] <= NEAR * head["chance_distance"]
        habit = "near" if near else "spread"
        return {"habit": habit, "label": LABELS[habit], "figure": head["mean_distance"]}
    return {"habit": best, "label": LABELS[best], "figure": head[best]}


def describe(head):
    """One head's clearest habit as a sentence: "looks at the previous character, 83% of its weight"."""
    if head["habit"] in DISTANCE_HABITS:
        return f"{head['label']}, {head['figure']:.1f} characters back on average"
    return f"{head['label']}, {100 * head['figure']:.0f}% of its weight"


# ------------------------------------------------------------------------------------------------
# a model's heads, on real text


def attention_of(cache, config):
    """gpt_forward's cache -> every layer's attention probabilities, (B, L, H, T, T).

    The attention layer's cache holds (q, k, v, att, scale) under "h.{l}.attn": att is what backward
    needs, and it is exactly the weights the heads apply.
    """
    return np.stack([cache[f"h.{l}.attn"][3] for l in range(config.n_layer)], axis=1)


def windows_of(text_ids, block_size, n=WINDOWS):
    """Up to n windows of block_size ids (fewer where the text is short), spread evenly over text_ids
    -> (N, T) with T = min(block_size, len(text_ids))."""
    text_ids = np.asarray(text_ids)
    T = min(block_size, len(text_ids))
    starts = np.unique(np.linspace(0, len(text_ids) - T, n).astype(int))
    return np.stack([text_ids[s:s + T] for s in starts])


def model_attention(params, config, ids):
    """ids (N, T) -> attention (N, L, H, T, T), numpy_gpt's forward in float64."""
    params = {name: np.asarray(p, dtype=np.float64) for name, p in params.items()}
    cache = gpt_forward(params, config, ids)[-1]                    # the cache comes last
    return attention_of(cache, config)


def habits_for_kid(params, config, chars, text_ids, n=WINDOWS):
    """Run numpy_gpt over n windows of text_ids (held-out text: the validation split) -> head_habits of
    every layer and head. text_ids needs at least 2 characters."""
    ids = windows_of(text_ids, config.block_size, n)                 # (N, T)
    return head_habits(model_attention(params, config, ids), ids, chars)


def val_ids(text, chars):
    """The validation split of the training text (its last 10%, as numpy_gpt.data.split_train_val
    cuts it) as ids of the vocabulary chars."""
    stoi = {c: i for i, c in enumerate(chars)}
    return np.array([stoi[c] for c in text[int(0.9 * len(text)):]], dtype=np.int64)
