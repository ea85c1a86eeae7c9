"""python -m peek export: the data a site is built from, and the loader that checks it.

An export is a folder of three files:

    peek.json      what the kid learned, computed by numpy_gpt in float64 (schema below)
    weights.json   the manifest of weights.bin (peek.weights)
    weights.bin    every parameter as little-endian float32

peek.json, format "tiny-llm peek export", version 1. V vocab, P block_size, C n_embd, L n_layer,
H n_head, T a prompt's length, k the neighbours and top guesses kept (5):

    format, version     "tiny-llm peek export", 1
    checkpoint          {"file": its name, "step": the training step or null, "meta": its metadata}
    config              {vocab_size, block_size, n_layer, n_head, n_embd}
    n_params            the number of parameters
    vocab               {"chars": the V characters in id order,
                         "counts": (V,) occurrences in the training text, or null where it was not given,
                         "corpus": the text's file name, or null}
    params              one row per tensor: {name, shape, count, mean, std, norm}
    embedding           {"pca": (V, 2) each character's vector on wte's two main axes,
                         "explained": (2,) the share of the variance of each axis,
                         "neighbours": (V, k) the nearest characters by cosine, as [id, cosine]}
    positions           {"neighbours": (P - 1,) the cosine of each position's vector with the next one's,
                         "similarity": (P, P) the cosine of every pair, rounded to 4 decimals}
    prompt              peek.analysis.prompt_view of the sample prompt: text, ids (T,), probs (T, V),
                        top (T, k), losses (T,), attention (L, H, T, T), strongest (L, H, T),
                        gradients {loss, inputs (T,), params [[name, norm], ...]} or null
    passage             the same, without attention, strongest and gradients (each null), for
                        block_size characters of the text's validation split (null without the text)
    log                 the run's evaluations from log.jsonl: [{step, train_loss, val_loss, lr,
                        tokens_per_s, elapsed_s, sample}, ...] (the last four where logged), or null
    habits              (L, H) each head's habits on the validation split (peek.habits.head_habits:
                        layer, head, mean_distance, previous, self, first, same_char, last_space, chance,
                        habit, label, figure), or null without the text
    snapshots           the run's snapshots up to the checkpoint's step (peek.snapshots.snapshot_views:
                        layer, prompt {text, ids (T,)}, snapshots [{step, train_loss, val_loss,
                        embedding {pca (V, 2), explained (2,)}, attention (H, T, T), habits}, ...]), or
                        null where no checkpoints/ folder with a snapshot in it holds the checkpoint or
                        sits beside it

Every number is a plain JSON number; nothing is pickled. load_export() checks all of it, and the
weights against their checksums, and names the first thing that is wrong.
"""
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from numpy_gpt.checkpoint import atomic_write
from numpy_gpt.config import GPTConfig, UserError
from numpy_gpt.data import default_prompt
from numpy_gpt.model import num_params

from . import analysis, habits, snapshots
from .weights import read_weights, write_weights

FORMAT, VERSION = "tiny-llm peek export", 1
NEIGHBOURS = 5


def build_export(checkpoint, log_path=None, prompt=None, text=None, corpus_name=None, kid=None, with_snapshots=True):
    """-> (the peek.json dict, float32 params, config, chars) for a checkpoint.

    log_path: a log.jsonl, or None to look beside the checkpoint. text: the training text, or None.
    kid: analysis.load_kid(checkpoint), where the caller has already loaded it.
    with_snapshots: False leaves snapshots null (peek show does not print them).
    """
    params, config, chars, meta = kid if kid is not None else analysis.load_kid(checkpoint)
    if log_path is None:
        log_path = analysis.find_log(checkpoint)
    prompt = default_prompt(chars) if prompt is None else prompt
    coords, explained = analysis.embedding_pca(params["wte.weight"])
    similarity = analysis.cosine_matrix(params["wpe.weight"])
    counts = analysis.char_counts(text, chars) if text is not None else None
    data = {
        "format": FORMAT, "version": VERSION,
        "checkpoint": {"file": Path(checkpoint).name, "step": meta.get("step"), "meta": meta},
        "config": config.to_dict(),
        "n_params": num_params(params),
        "vocab": {"chars": chars, "counts": counts, "corpus": corpus_name if counts is not None else None},
        "params": analysis.param_table(params),
        "embedding": {"pca": coords.tolist(), "explained": explained.tolist(),
                      "neighbours": [[list(n) for n in row]
                                     for row in analysis.nearest_characters(params["wte.weight"], NEIGHBOURS)]},
        "positions": {"neighbours": analysis.neighbour_similarity(params["wpe.weight"]).tolist(),
                      "similarity": np.round(similarity, 4).tolist()},
        "prompt": analysis.prompt_view(params, config, chars, prompt, NEIGHBOURS),
        "passage": None,
        "log": analysis.read_log(log_path) if log_path is not None else None,
        "habits": None,
        "snapshots": None,
    }
    if counts is not None:
        data["habits"] = habits.habits_for_kid(params, config, chars, habits.val_ids(text, chars))
    run = snapshots.run_folder_of(checkpoint) if with_snapshots else None
    if run is not None:
        data["snapshots"] = snapshots.snapshot_views(run, text if counts is not None else None,
                                                     up_to=meta.get("step"), log_path=log_path, config=config,
                                                     chars=chars)
    if counts is not None:
        data["passage"] = analysis.prompt_view(params, config, chars, passage_of(text, config.block_size),
                                               NEIGHBOURS, gradients=False, attention=False)
    return data, {n: p.astype(np.float32) for n, p in params.items()}, config, chars


def passage_of(text, block_size):
    """block_size characters of the validation split (the text's last 10%), from its first paragraph start."""
    val = text[int(0.9 * len(text)):]
    start = val.find("\n\n") + 2 if "\n\n" in val[:-block_size] else 0
    return val[start:start + block_size]


def write_export(folder, data, params, config, chars):
    """peek.json, weights.json and weights.bin into folder, all three or none (staged)."""
    with staged(Path(folder)) as stage:
        write_export_files(stage, data, params, config, chars)


def write_export_files(folder, data, params, config, chars):
    """write_export's three files into folder, which a caller has staged already (peek.build's site)."""
    write_weights(folder, params, config, chars)
    atomic_write(folder / "peek.json", lambda f: f.write(json.dumps(data, separators=(",", ":")).encode()))


@contextlib.contextmanager
def staged(out, remove=()):
    """-> a hidden, empty folder inside out to write files into. On leaving, each file moves to the same
    place under out, and out's files in remove (relative paths) are deleted, once every place is known
    to take a file: a write that fails leaves out as it was (not even made, if it was not there). On
    an error, nothing moves."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".staged.", suffix=".tmp"))
    try:
        yield stage
        files = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file())
        folders = set()                         # the nearest existing folder of each target
        for rel in files:
            target, folder = out / rel, (out / rel).parent
            while not folder.exists():
                folder = folder.parent
            if target.is_dir() or not folder.is_dir():
                clash = target if target.is_dir() else folder
                raise UserError(f"cannot write {target}: {clash} is a {'folder' if clash.is_dir() else 'file'} "
                                f"in the way; move it, or pass another --out")
            folders.add(folder)
        for folder in sorted(folders):
            try:
                tempfile.TemporaryFile(dir=folder).close()
            except OSError as e:
                raise UserError(f"cannot write into {folder} ({e.strerror}); pass an --out you may write to") \
                    from None
        for rel in files:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, out / rel)
        for rel in remove:
            (out / rel).unlink(missing_ok=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if made and not any(out.iterdir()):
            out.rmdir()


# ------------------------------------------------------------------------------------------------
# loading, with every part checked


def load_export(folder):
    """-> (peek.json's dict, float32 params). Any problem is one UserError that names it."""
    folder = Path(folder)
    path = folder / "peek.json"
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not an export folder; pass the folder that `python -m peek export "
                        f"--out FOLDER` wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no export at {folder} ({path.name} not found); write one with "
                        f"`python -m peek export --out {folder}`") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); it is truncated or corrupt: export again") from None
    try:
        check_export(data)
    except (ExportError, KeyError, TypeError, IndexError, ValueError) as e:
        what = e.args[0] if isinstance(e, ExportError) else f"{type(e).__name__} {e}"
        raise UserError(f"{path} is not a valid peek export: {what}; run `python -m peek export` again") from None
    params, config, chars, _ = read_weights(folder)
    if config.to_dict() != data["config"] or chars != data["vocab"]["chars"]:
        raise UserError(f"{folder}: weights.json and peek.json describe different models; export again")
    return data, params


class ExportError(Exception):
    pass


def check_export(d):
    """Raise ExportError naming the first field that is missing, of the wrong type or the wrong shape."""
    expect(isinstance(d, dict) and d.get("format") == FORMAT, f"its format is not {FORMAT!r}")
    expect(d.get("version") == VERSION, f"it is version {d.get('version')!r}, this peek reads version {VERSION}")
    try:
        config = GPTConfig.from_dict(d["config"])
    except (UserError, TypeError, KeyError) as e:
        raise ExportError(f"config: {e}") from None
    V, P, L, H = config.vocab_size, config.block_size, config.n_layer, config.n_head
    chars = d["vocab"]["chars"]
    expect(isinstance(chars, str) and len(chars) == V, f"vocab.chars is not a string of {V} characters")
    counts = d["vocab"]["counts"]
    expect(counts is None or (shape_of(counts) == (V,) and all(isinstance(c, int) and c >= 0 for c in counts)),
           f"vocab.counts is neither null nor {V} counts")
    expect(isinstance(d["n_params"], int) and d["n_params"] > 0, "n_params is not a positive integer")
    expect(isinstance(d["params"], list) and sum(r["count"] for r in d["params"]) == d["n_params"],
           "the params table does not add up to n_params")
    expect(shape_of(d["embedding"]["pca"]) == (V, 2), f"embedding.pca is not ({V}, 2)")
    expect(shape_of(d["embedding"]["explained"]) == (2,), "embedding.explained is not 2 numbers")
    expect(len(d["embedding"]["neighbours"]) == V, f"embedding.neighbours has not {V} rows")
    expect(shape_of(d["positions"]["neighbours"]) == (P - 1,), f"positions.neighbours is not ({P - 1},)")
    expect(shape_of(d["positions"]["similarity"]) == (P, P), f"positions.similarity is not ({P}, {P})")
    for name in ("prompt", "passage"):
        view = d[name]
        if view is None and name == "passage":
            continue
        expect(isinstance(view, dict), f"{name} is missing")
        T = len(view["ids"])
        expect(1 <= T <= P and all(isinstance(i, int) and 0 <= i < V for i in view["ids"]),
               f"{name}.ids are not 1 to {P} ids below {V}")
        expect(view["text"] == "".join(chars[i] for i in view["ids"]), f"{name}.text does not match its ids")
        expect(shape_of(view["probs"]) == (T, V), f"{name}.probs is not ({T}, {V})")
        expect(len(view["top"]) == T and len(view["losses"]) == T, f"{name}.top or .losses has not {T} rows")
        if view["attention"] is not None or name == "prompt":
            expect(shape_of(view["attention"]) == (L, H, T, T), f"{name}.attention is not ({L}, {H}, {T}, {T})")
            expect(shape_of(view["strongest"]) == (L, H, T), f"{name}.strongest is not ({L}, {H}, {T})")
            expect(all(abs(sum(row) - 1) < 1e-9 for layer in view["attention"] for head in layer for row in head),
                   f"{name}.attention has a row that does not sum to 1")
        grads = view["gradients"]
        expect(grads is None or (shape_of(grads["inputs"]) == (T,) and isinstance(grads["params"], list)),
               f"{name}.gradients is neither null nor {T} input norms with a params list")
    log = d["log"]
    expect(log is None or (isinstance(log, list) and all(
        isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) for k in analysis.LOG_FIELDS) for e in log)),
        "log is neither null nor a list of evaluations with step, train_loss and val_loss")
    check_habits(d["habits"], L, H, "habits")
    check_snapshots(d["snapshots"], V, L, H, P)


def check_habits(h, L, H, name):
    """habits: null, or L rows of H heads, each with its numbers and its label."""
    if h is None:
        return
    expect(isinstance(h, list) and len(h) == L and all(isinstance(row, list) and len(row) == H for row in h),
           f"{name} is neither null nor {L} layers of {H} heads")
    for l, row in enumerate(h):
        for i, head in enumerate(row):
            ok = isinstance(head, dict) and head.get("layer") == l and head.get("head") == i and all(
                number(head.get(k)) for k in ("mean_distance", "figure", *habits.HABITS)) and \
                head.get("habit") in habits.LABELS and head.get("label") == habits.LABELS[head["habit"]] and \
                isinstance(head.get("chance"), dict) and all(number(head["chance"].get(k)) for k in habits.HABITS)
            expect(ok, f"{name}[{l}][{i}] is not layer {l}, head {i} with its habits, chance, habit, label and figure")


def check_snapshots(s, V, L, H, P):
    if s is None:
        return
    expect(isinstance(s, dict) and isinstance(s.get("layer"), int) and 0 <= s["layer"] < L,
           f"snapshots is neither null nor a dict with a layer from 0 to {L - 1}")
    ids = s["prompt"]["ids"]
    T = len(ids)
    expect(1 <= T <= P and all(isinstance(i, int) and 0 <= i < V for i in ids) and isinstance(s["prompt"]["text"], str)
           and len(s["prompt"]["text"]) == T, f"snapshots.prompt is not a text of 1 to {P} characters with its ids")
    views = s["snapshots"]
    expect(isinstance(views, list) and views, "snapshots.snapshots is not a list of at least one snapshot")
    steps = [v.get("step") for v in views]
    expect(all(isinstance(x, int) for x in steps) and steps == sorted(set(steps)),
           "snapshots' steps are not whole numbers in increasing order")
    for v in views:
        where = f"snapshots at step {v['step']}"
        expect(all(v.get(k) is None or number(v[k]) for k in ("train_loss", "val_loss")),
               f"{where}: train_loss or val_loss is neither null nor a number")
        expect(shape_of(v["embedding"]["pca"]) == (V, 2) and shape_of(v["embedding"]["explained"]) == (2,),
               f"{where}: embedding.pca is not ({V}, 2) with 2 explained shares")
        expect(shape_of(v["attention"]) == (H, T, T), f"{where}: attention is not ({H}, {T}, {T})")
        # rounded to snapshots.DECIMALS: each of a row's T weights is off by half a unit of the last decimal
        slack = T * 0.5 * 10.0 ** -snapshots.DECIMALS + 1e-9
        expect(all(abs(sum(row) - 1) <= slack for head in v["attention"] for row in head),
               f"{where}: attention has a row that does not sum to 1")
        check_habits(v["habits"], L, H, f"{where}: habits")


def number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def expect(ok, message):
    if not ok:
        raise ExportError(message)


def shape_of(x):
    """The shape of a nested list of numbers, or None where it is ragged or holds something else."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return ()
    if not isinstance(x, list) or not x:
        return (0,) if x == [] else None
    inner = {shape_of(e) for e in x}
    if len(inner) != 1 or None in inner:
        return None
    return (len(x),) + inner.pop()
