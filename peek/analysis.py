"""What the kid learned, computed with numpy_gpt in float64: every number peek shows or exports.

Shape key: T time (prompt length), C channels, H heads, V vocab, L layers, P block_size positions.

Nothing here prints or draws; peek.show prints these results, peek.figures draws them and
peek.export writes them for the site.
"""
import json
from collections import Counter
from pathlib import Path

import numpy as np

from numpy_gpt.machinery.checkpoint import load_weights
from numpy_gpt.machinery.errors import UserError, open_input
from numpy_gpt.data import CharTokenizer
from numpy_gpt.model import gpt_backward, gpt_forward
from numpy_gpt.layers import softmax


def load_kid(path):
    """-> (params as float64, config, chars, meta) from any checkpoint in the project's weights format."""
    params, config, chars, meta = load_weights(path)
    return {name: p.astype(np.float64) for name, p in params.items()}, config, chars, meta


def show_char(c):
    """A character as one visible glyph: newline and space would vanish in a table."""
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(c, c)


# ------------------------------------------------------------------------------------------------
# the parameters


def param_table(params):
    """-> one row per tensor, in state_dict() order: name, shape, count, mean, std, norm."""
    return [{"name": name, "shape": list(p.shape), "count": int(p.size), "mean": float(p.mean()),
             "std": float(p.std()), "norm": float(np.linalg.norm(p))} for name, p in params.items()]


# ------------------------------------------------------------------------------------------------
# the character embeddings (wte) and the position vectors (wpe)


def cosine_matrix(m):
    """m (N, C) -> (N, N): the cosine similarity of every pair of rows."""
    unit = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-30)   # (N, C)
    return unit @ unit.T                                                      # (N, N)


def nearest_characters(wte, k=5):
    """wte (V, C) -> for each character, its k nearest others by cosine: a list of (id, cosine) lists."""
    cos = cosine_matrix(wte)                                     # (V, V)
    np.fill_diagonal(cos, -np.inf)                               # a character is not its own neighbour
    k = min(k, len(wte) - 1)
    order = np.argsort(-cos, axis=1, kind="stable")[:, :k]      # (V, k) most similar first
    return [[(int(j), float(cos[i, j])) for j in row] for i, row in enumerate(order)]


def embedding_pca(wte):
    """wte (V, C) -> (coords (V, 2), the share of the variance each of the two axes explains).

    The two directions along which the characters' vectors vary most: the top two right singular
    vectors of the centred table. Their signs are fixed so that the largest coordinate is positive.
    """
    centred = wte - wte.mean(axis=0)                             # (V, C)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)       # s (min(V, C),), vt (min(V, C), C)
    axes = vt[:2]                                                # (2, C)
    coords = centred @ axes.T                                    # (V, 2)
    flip = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    coords *= np.where(flip == 0, 1.0, flip)
    explained = s[:2] ** 2 / max(float((s ** 2).sum()), 1e-30)
    if coords.shape[1] < 2:                                      # n_embd or V of 1: one axis only
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        explained = np.pad(explained, (0, 2 - len(explained)))
    return coords, explained


def neighbour_similarity(wpe):
    """wpe (P, C) -> (P - 1,): the cosine between each position's vector and the next one's."""
    cos = cosine_matrix(wpe)                                     # (P, P)
    return np.diagonal(cos, offset=1).copy()


# ------------------------------------------------------------------------------------------------
# a prompt through the model: predictions, attention and gradients


def encode_prompt(prompt, chars, block_size):
    """Check the prompt against the model -> its ids. Every problem is one UserError."""
    if prompt == "":
        raise UserError("the prompt is empty; pass --prompt with at least one character")
    if len(prompt) > block_size:
        raise UserError(f"the prompt has {len(prompt)} characters, more than the model's context of "
                        f"{block_size}; shorten it to {block_size} or fewer")
    try:
        return CharTokenizer(chars).encode(prompt)
    except UserError as e:
        raise UserError(f"the prompt has {e}") from None


def prompt_view(params, config, chars, prompt, k=5, gradients=True, attention=True):
    """Run the prompt through the model -> a dict of plain lists (JSON-ready):

    ids          (T,) the prompt's token ids
    probs        (T, V) the next-character distribution at each position: softmax of the logits
    top          (T, k) the k most likely next characters at each position, as [id, probability]
    losses       (T,) -log p(the prompt's next character) at each position; None at the last
    attention    (L, H, T, T) the attention probabilities of every layer and head (row: the query);
                 None with attention=False
    strongest    (L, H, T) for each query position, the key position it attends to most (or None)
    gradients    with gradients=True and T >= 2, one backward pass of the mean loss over the T - 1
                 positions whose next character is known:
        loss     that mean loss
        inputs   (T,) |d loss / d x[t]|, x[t] = wte[ids[t]] + wpe[t] the input vector at position t.
                 With one sequence, position t's row of wpe is added to x at t alone, so
                 d loss / d x[t] is exactly the gradient of wpe's row t. The last position feeds no
                 known target, and the mask keeps earlier positions from seeing it: its entry is 0.
        params   every parameter tensor's gradient norm, largest first, as [name, norm]
    """
    ids = encode_prompt(prompt, chars, config.block_size)
    idx = np.array([ids])                                               # (1, T)
    logits, _, cache = gpt_forward(params, config, idx)                 # (1, T, V)
    probs = softmax(logits[0])                                          # (T, V)
    logprobs = np.log(np.maximum(probs, 1e-300))                        # (T, V)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :min(k, config.vocab_size)]   # (T, k)
    att = np.stack([cache[f"h.{l}.attn"][3][0] for l in range(config.n_layer)])      # (L, H, T, T): q, k, v, att
    view = {
        "text": prompt, "ids": [int(i) for i in ids],
        "probs": probs.tolist(),
        "top": [[[int(j), float(probs[t, j])] for j in row] for t, row in enumerate(order)],
        "losses": [float(-logprobs[t, ids[t + 1]]) for t in range(len(ids) - 1)] + [None],
        "attention": att.tolist() if attention else None,
        "strongest": att.argmax(axis=-1).tolist() if attention else None,
        "gradients": None,
    }
    if gradients and len(ids) >= 2:
        x, y = idx[:, :-1], idx[:, 1:]                                  # (1, T - 1) each
        _, loss, cache = gpt_forward(params, config, x, y)
        grads = gpt_backward(params, config, cache)
        dx = grads["wpe.weight"][:len(ids) - 1]                          # (T - 1, C) = d loss / d x[t]
        norms = sorted(((name, float(np.linalg.norm(g))) for name, g in grads.items()), key=lambda r: -r[1])
        view["gradients"] = {"loss": float(loss),
                             "inputs": np.linalg.norm(dx, axis=1).tolist() + [0.0],
                             "params": [list(r) for r in norms]}
    return view


# ------------------------------------------------------------------------------------------------
# the training run: log.jsonl, and the corpus's character counts

LOG_FIELDS = {"step": int, "train_loss": float, "val_loss": float}


def find_log(checkpoint):
    """The log.jsonl of the run a checkpoint came from: beside it, or one folder up for a snapshot in
    out/checkpoints/. None when there is none."""
    checkpoint = Path(checkpoint)
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "log.jsonl").is_file():
            return folder / "log.jsonl"
    return None


def read_log(path):
    """-> the evaluations of a run, one dict per line of log.jsonl, in step order.

    Each must have step, train_loss and val_loss; elapsed_s, lr, tokens_per_s and sample are kept
    when present.
    """
    path = Path(path)
    with open_input(path, "log", "pass --log with a run's log.jsonl, or leave it out") as f:
        data = f.read()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e}); is it a training log.jsonl?") from None
    entries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {n} is not JSON ({err}); is it a training log.jsonl?") from None
        if not isinstance(e, dict) or not all(isinstance(e.get(k), (int, float)) and not isinstance(e.get(k), bool)
                                              for k in LOG_FIELDS):
            raise UserError(f"{path} line {n} lacks a number for one of {', '.join(LOG_FIELDS)}; "
                            f"is it a training log.jsonl?")
        entries.append({k: e[k] for k in ("step", "train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s",
                                          "sample") if k in e})
    if not entries:
        raise UserError(f"{path} holds no evaluations")
    return sorted(entries, key=lambda e: e["step"])


def char_counts(text, chars):
    """-> how often each vocabulary character occurs in text, in id order; None if text has others."""
    if set(text) != set(chars):
        return None
    counts = Counter(text)
    return [counts[c] for c in chars]
