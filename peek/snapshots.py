"""Training seen from inside: what the kid's snapshots show, step by step.

Shape key: V vocab, H heads, T time (the prompt's length), L layers.

Both trainers write a snapshot of the weights at each evaluation, OUT/checkpoints/step_NNNNN.npz
(numpy_gpt.machinery.loop), and the evaluation's losses to OUT/log.jsonl. For each snapshot this module
computes, with numpy_gpt in float64:

    step          the optimizer steps done when it was written
    train_loss, val_loss     the losses log.jsonl gives for that step (null where the log has none)
    embedding     {"pca": (V, 2) each character's vector on wte's two main axes (peek.analysis.embedding_pca),
                   "explained": (2,) the share of the variance of wte that each axis explains}
    attention     (H, T, T) one layer's attention on a fixed prompt, rounded to 3 decimals
    habits        peek.habits.habits_for_kid on the validation text (null without the text)

A principal axis has no sign of its own, and two axes that explain nearly the same share can trade
places from one snapshot to the next. So that a reader moving a step slider sees the letters move,
not the map flip or turn, each snapshot's axes are matched to the next snapshot's: swapped where
they agree better swapped, then each axis's sign flipped to agree (the explained shares move with
their axes). The last snapshot keeps embedding_pca's own axes, the ones peek.export's map has.
"""
import re
from pathlib import Path

import numpy as np

from numpy_gpt.machinery.checkpoint import load_weights
from numpy_gpt.machinery.corpus import default_prompt
from numpy_gpt.machinery.errors import UserError

from . import analysis
from .habits import habits_for_kid, model_attention, val_ids

SNAPSHOT = re.compile(r"step_(\d+)\.npz")
MOST = 11              # snapshots kept, evenly spread from the first to the last: a 5,000-step run's 11
PROMPT_LENGTH = 40     # characters of the fixed prompt
DECIMALS = 3           # attention weights are rounded to this many decimals


def find_snapshots(folder):
    """A run folder (holding checkpoints/) or its checkpoints/ folder -> [(step, path)] in step order.
    No folder, or none of step_NNNNN.npz in it, is a UserError."""
    folder = Path(folder)
    checkpoints = folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder
    if not checkpoints.is_dir():
        raise UserError(f"no snapshots: {checkpoints} is not a folder; pass a run's --out folder, where "
                        f"numpy_gpt.train or torch_gpt.train writes checkpoints/step_NNNNN.npz")
    found = sorted((int(m.group(1)), p) for p in checkpoints.iterdir()
                   if (m := SNAPSHOT.fullmatch(p.name)) and p.is_file())
    if not found:
        raise UserError(f"no snapshots in {checkpoints} (no step_NNNNN.npz files); a run writes one at each "
                        f"evaluation: train with --eval-interval smaller than --steps")
    return found


def run_folder_of(checkpoint):
    """The run folder whose checkpoints/ a checkpoint belongs to (OUT for OUT/kid.npz and for
    OUT/checkpoints/step_NNNNN.npz), or None where there is no checkpoints/ folder with a snapshot in it."""
    checkpoint = Path(checkpoint)
    folder = checkpoint.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent / "checkpoints"
    if folder.is_dir() and any(SNAPSHOT.fullmatch(p.name) for p in folder.iterdir()):
        return folder.parent
    return None


def spread(found, most=MOST):
    """At most `most` of the snapshots, evenly spread over the list, always with the first and the last."""
    if len(found) <= most:
        return list(found)
    picks = np.unique(np.round(np.linspace(0, len(found) - 1, most)).astype(int))
    return [found[i] for i in picks]


def align(coords, explained, ref):
    """coords (V, 2) with their explained (2,) -> the same, axes swapped where they then agree better with
    ref (V, 2), and each axis's sign flipped to agree with ref's (a positive dot product)."""
    agree = coords.T @ ref                                           # (2, 2) axis i of coords against j of ref
    if abs(agree[0, 1]) + abs(agree[1, 0]) > abs(agree[0, 0]) + abs(agree[1, 1]):
        coords, explained, agree = coords[:, ::-1], explained[::-1], agree[::-1]
    signs = np.where(np.diagonal(agree) < 0, -1.0, 1.0)              # (2,)
    return coords * signs, explained.copy()


def fixed_prompt(text, chars, block_size):
    """The prompt every snapshot's attention is shown on: the first PROMPT_LENGTH characters of the
    validation passage peek's pages use (peek.export.passage_of), or the vocabulary's default prompt
    without the text."""
    if text is None:
        return default_prompt(chars)
    from .export import passage_of
    return passage_of(text, min(PROMPT_LENGTH, block_size))


def snapshot_views(folder, text=None, layer=0, up_to=None, log_path=None, most=MOST, config=None, chars=None):
    """The run in folder (its --out, or the checkpoints/ in it) -> a JSON-ready dict:

        layer       the layer whose attention is shown
        prompt      {"text", "ids"}: the fixed prompt
        snapshots   [{step, train_loss, val_loss, embedding, attention, habits}, ...] in step order
                    (module docstring), at most `most` of them, spread evenly over the run

    text: the training text (for the prompt and the habits), or None. up_to: leave out snapshots after
    this step. log_path: the run's log.jsonl (default: in the run folder). config, chars: the model the
    snapshots must match (the checkpoint being exported); by default the first snapshot's.
    Every problem is a UserError naming the file.
    """
    found = find_snapshots(folder)
    if up_to is not None:
        found = [(step, path) for step, path in found if step <= up_to]
        if not found:
            raise UserError(f"no snapshots in {folder} up to step {up_to}")
    found = spread(found, most)
    run = found[0][1].parent.parent
    if log_path is None and (run / "log.jsonl").is_file():
        log_path = run / "log.jsonl"
    losses = {e["step"]: e for e in analysis.read_log(log_path)} if log_path is not None else {}
    views, prompt, ids, held_out = [], None, None, None
    for step, path in found:
        params, cfg, vocab, _ = load_weights(path)
        if config is None:
            config, chars = cfg, vocab
        if cfg != config or vocab != chars:
            raise UserError(f"{path} is a snapshot of another model ({cfg.to_dict()}, {len(vocab)} characters) "
                            f"than {config.to_dict()} with {len(chars)} characters; move it out of {path.parent}")
        if prompt is None:
            if not 0 <= layer < config.n_layer:
                raise UserError(f"layer {layer} does not exist: the model has layers 0 to {config.n_layer - 1}")
            if text is not None and not set(text) <= set(chars):
                raise UserError(f"the text has characters that {path}'s vocabulary lacks "
                                f"({''.join(sorted(set(text) - set(chars))[:10])!r}); pass the text the run trained on")
            prompt = fixed_prompt(text, chars, config.block_size)
            ids = analysis.encode_prompt(prompt, chars, config.block_size)
            held_out = val_ids(text, chars) if text is not None else None
            if held_out is not None and len(held_out) < 2:
                held_out = None                                             # too short to show a habit
        params = {name: p.astype(np.float64) for name, p in params.items()}
        coords, explained = analysis.embedding_pca(params["wte.weight"])
        att = model_attention(params, config, ids[None])[0, layer]          # (H, T, T)
        entry = losses.get(step, {})
        views.append({
            "step": step, "train_loss": entry.get("train_loss"), "val_loss": entry.get("val_loss"),
            "embedding": {"pca": coords, "explained": explained},
            "attention": rounded(att, DECIMALS),
            "habits": habits_for_kid(params, config, chars, held_out) if held_out is not None else None,
        })
    for i in reversed(range(len(views) - 1)):                               # match each map to the next
        e, ref = views[i]["embedding"], views[i + 1]["embedding"]["pca"]
        e["pca"], e["explained"] = align(e["pca"], e["explained"], ref)
    for v in views:
        e = v["embedding"]
        v["embedding"] = {"pca": rounded(e["pca"], 4), "explained": rounded(e["explained"], 4)}
    return {"layer": layer, "prompt": {"text": prompt, "ids": [int(i) for i in ids]}, "snapshots": views}


def rounded(a, decimals):
    """An array -> nested lists of its values rounded to decimals, whole numbers as ints (0, not 0.0:
    the upper triangle of an attention map is all zeros, and JSON writes an int in one character)."""
    def whole_as_int(x):
        if isinstance(x, list):
            return [whole_as_int(e) for e in x]
        return int(x) if x.is_integer() else x
    return whole_as_int(np.round(np.asarray(a, dtype=np.float64), decimals).tolist())
