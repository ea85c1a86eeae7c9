"""python -m peek build: the static site that walks a reader through the kid in ten steps.

    site/index.html, site/1-task.html ... site/10-playground.html   the pages
    site/style.css, site/site.js                                     the pages' look and code
    site/kid.js, site/ahead.js, site/rng.js                          the kid in JavaScript (ahead.js: its worker)
    site/calc.js                                                     the model-size calculator's arithmetic
    site/ladder.html, ladder.js, train.js, data/ladder.*             the ladder's rungs 1 and 2, trained in the tab
    site/data/peek.json, weights.json, weights.bin                   the export (peek.export)
    site/data/parity.json                                            parity's summary, when given

Each page's prose is a Jinja2 template in peek/templates/, filled at build time with the kid's real
numbers (facts(), below); site.js then draws the figures from data/peek.json. Plain HTML, CSS and
JavaScript, every file local and every URL relative: the folder works from any static host, and
nothing is fetched from anywhere else. Step 6 shows numpy_gpt's own source and step 9 the one-file
trainer, both read at build time, so they never go stale.
"""
import html
import inspect
import json
import math
import shutil
from pathlib import Path

import numpy as np

from numpy_gpt import layers, model
from numpy_gpt.machinery.checkpoint import atomic_write
from numpy_gpt.machinery.errors import UserError, open_input

from .export import load_export, staged, write_export_files
from .habits import DISTANCE_HABITS, describe
from .ladder_tab import write_ladder

WEB = Path(__file__).parent / "web"
TEMPLATES = Path(__file__).parent / "templates"
ROOT = Path(__file__).resolve().parent.parent
ASSETS = ("style.css", "site.js", "dom.js", "kid.js", "ahead.js", "rng.js", "calc.js", "train.js", "ladder.js", "ladder.html")

# (file key, title, the index's one-line promise)
STEPS = [
    ("task", "The task", "It only ever guesses the next character. See how sure it is, letter by letter."),
    ("vocabulary", "The vocabulary", "Every character it knows, and the number it reads instead."),
    ("embeddings", "Embeddings", "Each character becomes a list of numbers; alike characters end up close."),
    ("positions", "Positions", "How the kid knows which character came first."),
    ("attention", "Attention", "Every head looks back at the text in its own way, measured."),
    ("block", "The block", "The whole machine on one page: click a part to see its code and numbers."),
    ("letters", "Back to letters", "From scores to a choice: temperature, top-k and top-p, live."),
    ("learning", "Watch it learn", "The run replayed: the letters sort themselves and the heads find jobs."),
    ("behind", "Behind the scenes", "How the kid was made, what surprised us, and what a bigger kid would cost."),
    ("playground", "The playground", "The kid writes in this tab, exactly as numpy_gpt does."),
]

NANOGPT = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "vocab_size": 65}   # shakespeare_char


def page_name(n):
    return f"{n}-{STEPS[n - 1][0]}.html"


def build_site(out, export=None, parity=None):
    """Write the site into out from an export folder (checked first) -> the list of pages written.

    export: a folder written by peek.export, or a (data, params, config, chars) tuple to write into
    out/data. parity: a parity --json summary, or None.

    The site is written whole into a hidden folder inside out first, then each file is moved into
    place, once every place has been found writable: a build that fails leaves the old site as it was.
    """
    out = Path(out)
    env = environment()                                     # refuses a missing Jinja2 before any work
    with staged(out, remove=[] if parity is not None else [Path("data") / "parity.json"]) as stage:
        pages = write_site(stage, export, parity, env)
    return [out / page.name for page in pages]


def environment():
    """The Jinja2 environment of peek/templates, HTML-escaping every value."""
    try:
        import jinja2
    except ImportError:
        raise UserError("peek build needs Jinja2 for its page templates: pip install -e '.[peek]' "
                        "(or pip install jinja2)") from None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=False, lstrip_blocks=True)
    env.filters["num"] = lambda x, digits=0: f"{x:,.{digits}f}"
    env.filters["pct"] = lambda x, digits=0: f"{100 * x:.{digits}f}%"
    env.filters["glyph"] = show_char
    env.filters["duration"] = lambda s: f"{s:.0f} seconds" if s < 90 else f"{s / 60:.1f} minutes"
    env.filters["g"] = lambda x: f"{x:.2g}"
    return env


def write_site(out, export, parity, env):
    """build_site's files, written into the empty folder out -> the pages' paths."""
    if isinstance(export, tuple):
        (out / "data").mkdir()
        write_export_files(out / "data", *export)
    else:
        data, _ = load_export(export)                       # refuses a missing or corrupt export
        (out / "data").mkdir(parents=True, exist_ok=True)
        for name in ("peek.json", "weights.json", "weights.bin"):
            shutil.copyfile(Path(export) / name, out / "data" / name)
    data, _ = load_export(out / "data")
    summary = None
    if parity is not None:
        summary = read_parity(parity)
        atomic_write(out / "data" / "parity.json", lambda f: f.write(json.dumps(summary).encode()))
    for name in ASSETS:
        if (WEB / name).is_file():
            shutil.copyfile(WEB / name, out / name)
    write_ladder(out / "data")                             # the ladder page's text and first weights
    k = facts(data, summary)
    pages = [("index.html", env.get_template("index.html").render(k=k, steps=steps_for(0), step=0,
                                                                   thumbs=thumbnails(data, k)))]
    for n, (key, title, _) in enumerate(STEPS, 1):
        pages.append((page_name(n), env.get_template(f"{key}.html").render(
            k=k, steps=steps_for(n), step=n, title=f"{n}. {title}", code=CODE)))
    for name, text in pages:
        atomic_write(out / name, lambda f: f.write(text.encode()))
    return [out / name for name, _ in pages]


def steps_for(current):
    """The navigation: every step's number, title, file and promise, and the ones before and after."""
    rows = [{"n": n, "title": t, "file": page_name(n), "promise": p, "current": n == current}
            for n, (_, t, p) in enumerate(STEPS, 1)]
    return {"all": rows, "prev": rows[current - 2] if current > 1 else None,
            "next": rows[current] if 0 < current < len(rows) else None}


def read_parity(path, checkpoint="out/kid.npz"):
    """A parity --json summary, checked -> its dict. checkpoint: the kid the hint tells parity to load."""
    fix = f"write it with `python -m parity --checkpoint {checkpoint} --json {path}`, or leave --parity out"
    with open_input(path, "parity summary", fix) as f:
        data = f.read()
    try:
        summary = json.loads(data)
        [(s["section"], s["tensors"], s["worst"], float(s["max_rel"]), float(s["tol"])) for s in summary["sections"]]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a parity --json summary ({type(e).__name__}: {e}); {fix}") from None
    return summary


def show_text(text):
    """text in quotes, its newlines drawn as ⏎."""
    return "“" + text.replace("\n", "⏎") + "”"


def show_char(c):
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(c, c)


# ------------------------------------------------------------------------------------------------
# the facts the prose quotes: every number a page's text names, computed from the export


def facts(d, parity=None):
    c = d["config"]
    V, C, L, H, P = c["vocab_size"], c["n_embd"], c["n_layer"], c["n_head"], c["block_size"]
    k = {"config": c, "V": V, "C": C, "L": L, "H": H, "P": P, "heads": L * H, "n_params": d["n_params"],
         "ln_V": math.log(V), "file": d["checkpoint"]["file"], "step": d["checkpoint"]["step"],
         "chars": d["vocab"]["chars"], "corpus": d["vocab"]["corpus"], "parity": parity}
    k["per_block"] = 12 * C * C + 13 * C
    k["blocks_share"] = L * k["per_block"] / d["n_params"]
    k["D"] = C // H
    counts = d["vocab"]["counts"]
    if counts:
        total = sum(counts)
        order = sorted(range(V), key=lambda i: -counts[i])
        k["counts"] = {"total": total, "top": [(d["vocab"]["chars"][i], counts[i] / total) for i in order[:3]],
                       "rarest": (d["vocab"]["chars"][order[-1]], counts[order[-1]])}
    else:
        k["counts"] = None
    view = d["passage"] or d["prompt"]
    losses = [x for x in view["losses"] if x is not None]
    k["passage"] = {"is_val": d["passage"] is not None, "mean_loss": float(np.mean(losses)) if losses else None,
                    "n": len(losses), "chars": len(view["text"])}
    if losses:
        k["passage"]["choices"] = math.exp(k["passage"]["mean_loss"])
        k["passage"].update(word_costs(view))
    e = d["embedding"]["explained"]
    k["explained"] = e
    k["explained_rest"] = max(0.0, 1 - sum(e))
    chars = d["vocab"]["chars"]
    k["neighbours_of"] = []
    for ch in "aeE:":
        if ch in chars:
            i = chars.index(ch)
            k["neighbours_of"].append((ch, [(chars[j], cos) for j, cos in d["embedding"]["neighbours"][i][:3]]))
    nb = d["positions"]["neighbours"]
    k["pos_next_mean"] = float(np.mean(nb)) if nb else None
    sim = np.array(d["positions"]["similarity"])
    k["pos_far"] = float(sim[0, -1]) if P > 1 else None
    k["habits"] = habit_rows(d)
    k["clearest_head"] = clearest_head(k["habits"])
    k["letters"] = open_prompt(d)
    k["log"] = log_facts(d["log"])
    k["snapshots"] = snapshot_facts(d)
    k["surprises"] = surprises(d, k)
    k["kid_py"] = read_kid_py()
    k["calc"] = {"kid": {key: c[key] for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")},
                 "nanogpt": NANOGPT}
    return k


def word_costs(view):
    """The mean loss of a word's first letter (after a space or newline) and of a letter inside a word."""
    text, losses = view["text"], view["losses"]
    start, rest = [], []
    for t in range(1, len(text)):
        if losses[t - 1] is None or not text[t].isalpha():
            continue
        (start if text[t - 1] in " \n" else rest if text[t - 1].isalpha() else []).append(losses[t - 1])
    if not start or not rest:
        return {"word_start": None, "word_rest": None}
    return {"word_start": float(np.mean(start)), "word_rest": float(np.mean(rest))}


def habit_rows(d):
    """The export's head habits (peek.habits), flattened -> [{layer, head, label, figure, ...}], or None."""
    habits = d.get("habits")
    if isinstance(habits, dict):
        habits = habits.get("heads")
    if not habits:
        return None
    rows = [dict(h, text=describe(h)) for layer in habits for h in layer]
    return sorted(rows, key=lambda h: (h["layer"], h["head"]))


def clearest_head(rows):
    """The head whose clearest habit takes the largest share of its weight, or None."""
    clear = [h for h in rows or [] if h.get("habit") not in DISTANCE_HABITS]
    return max(clear, key=lambda h: h["figure"]) if clear else None


def open_prompt(d):
    """Step 7's default prompt: where the kid is most unsure what comes next.

    From the held-out passage: among its prefixes of 12 to 48 characters, the one after which the kid's
    next-character distribution has the highest entropy (-sum p ln p, in nats). Deterministic: the first
    of equals. Without a passage, the sample prompt.
    """
    view = d["passage"]
    if view is None:
        probs = np.array(d["prompt"]["probs"][-1])
        text = d["prompt"]["text"]
    else:
        probs_all = np.array(view["probs"])                                        # (T, V)
        ent = -(probs_all * np.log(np.maximum(probs_all, 1e-300))).sum(axis=1)     # (T,)
        lo, hi = min(11, len(ent) - 1), min(48, len(ent))
        t = lo + int(np.argmax(ent[lo:hi]))
        probs, text = probs_all[t], view["text"][:t + 1]
    ent = float(-(probs * np.log(np.maximum(probs, 1e-300))).sum())
    order = np.argsort(-probs, kind="stable")[:3]
    chars = d["vocab"]["chars"]
    return {"text": text, "entropy": ent, "choices": math.exp(ent),
            "top": [(chars[int(j)], float(probs[j])) for j in order],
            "bars": [float(p) for p in np.sort(probs)[::-1][:8]]}


def log_facts(log):
    if not log:
        return None
    first, last = log[0], log[-1]
    best = min(log, key=lambda e: e["val_loss"])
    rates = [e["tokens_per_s"] for e in log if e.get("tokens_per_s")]
    return {"n": len(log), "first": first, "last": last, "best": best,
            "every": log[1]["step"] - log[0]["step"] if len(log) > 1 else None,
            "gap": last["val_loss"] - last["train_loss"],
            "tokens_per_s": float(np.mean(rates)) if rates else None,
            "elapsed": last.get("elapsed_s"),
            "lr": max((e["lr"] for e in log if "lr" in e), default=None)}


def snapshot_facts(d):
    s = d.get("snapshots")
    if not s:
        return None
    items = s["snapshots"]
    return {"n": len(items), "steps": [i["step"] for i in items], "prompt": s["prompt"]["text"], "layer": s["layer"]}


def surprises(d, k):
    """'What surprised us': items, each backed by a number this run measured."""
    items = []
    log = k["log"]
    if log and log["best"]["step"] < log["last"]["step"]:
        b, last = log["best"], log["last"]
        items.append(f"The held-out loss was lowest at step {b['step']:,} ({b['val_loss']:.4f}) and ended at "
                     f"{last['val_loss']:.4f} by step {last['step']:,}, while the training loss kept falling to "
                     f"{last['train_loss']:.4f}: past some point the kid learns this text by heart rather "
                     f"than learning to write.")
    elif log:
        items.append(f"The held-out loss was still falling at the last step ({log['last']['val_loss']:.4f} at "
                     f"step {log['last']['step']:,}, from {log['first']['val_loss']:.4f} at the start): the gap "
                     f"to the training loss is {log['gap']:.4f} nats.")
    items += experiment_surprises()
    grads = d["prompt"]["gradients"]
    if grads and len(grads["inputs"]) >= 3:
        g = np.array(grads["inputs"])
        share = float(g[:2].sum() / max(g.sum(), 1e-30))
        T = len(g) - 1                                    # the last position feeds no known target
        text = show_text(d["prompt"]["text"])
        items.append(f"How much does each character of the prompt {text} matter to the loss? Measured by the "
                     f"size of the loss's gradient at each position, the first two of its {T} characters that "
                     f"have a next one to predict carry {100 * share:.0f}% of it"
                     + (": the opening letters decide most of what the kid expects next." if share > 0.5 else
                        ", about their share: the kid weighs the whole prompt." if share > 1.5 / T else "."))
    if k["explained"] is not None:
        e = k["explained"]
        items.append(f"The two directions in which the character vectors differ most explain only "
                     f"{100 * e[0]:.0f}% and {100 * e[1]:.0f}% of their spread: the kid uses all "
                     f"{k['C']} of its numbers, not two.")
    if k["letters"]["choices"] > 2:
        unsure = (f"After {show_text(k['letters']['text'])} the kid is as unsure as a fair choice among "
                  f"{k['letters']['choices']:.1f} characters")
        # the held-out average: the run's last val loss, a mean over many windows (not step 1's one passage)
        items.append(unsure + (f", yet on average over held-out text (a loss of {log['last']['val_loss']:.4f}) it "
                               f"hesitates between only {math.exp(log['last']['val_loss']):.1f}." if log else "."))
    return items


def experiment_surprises(path=None):
    """Surprises from docs/experiments.md's table of one-flag runs, read at build time: [] where the page
    or its rows are not there. Each row: | flag (NAME) | val at 1,000 | 3,000 | 5,000 | train at 5,000 |."""
    path = path or ROOT / "docs" / "experiments.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5:
            try:
                rows[cells[0]] = [float(c.replace(",", "")) for c in cells[1:]]
            except ValueError:
                continue
    find = lambda start: next((v for k, v in rows.items() if k.startswith(start)), None)
    base, no_dropout = find("none"), find("`--dropout 0`")
    seeds = [v for k, v in rows.items() if k.startswith("`--seed")]
    items = []
    if base and no_dropout:
        items.append(f"Without dropout (which silences a random tenth of the signals inside the kid at each training "
                     f"step) the "
                     f"kid learns fastest at first, then its held-out loss stops falling at step 3,000 "
                     f"({no_dropout[1]:.4f}, and {no_dropout[2]:.4f} at step 5,000) while its training loss "
                     f"goes on down to {no_dropout[3]:.4f}: it memorises the text. The kid trains with dropout 0.1, "
                     f"and in the same experiment it ends at {base[2]:.4f} (docs/experiments.md).")
    if base and seeds:
        ends = sorted([base[2]] + [v[2] for v in seeds])
        items.append(f"The seed alone, the number that fixes the random start, moves the final held-out loss "
                     f"between {ends[0]:.4f} and {ends[-1]:.4f} with every setting the same: a change smaller "
                     f"than {ends[-1] - ends[0]:.3f} proves nothing from one run (docs/experiments.md).")
    return items


def read_kid_py():
    """torch_gpt/kid.py, the whole training in one file, as it is in the repository -> its text, or None."""
    path = ROOT / "torch_gpt" / "kid.py"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------
# step 6: the code of each part of the diagram, read from numpy_gpt at build time


def source(*names, module=layers):
    """numpy_gpt's source of each named function that exists today (the code is being edited by others,
    so a renamed function is left out rather than failing the build)."""
    found = [getattr(module, n) for n in names if callable(getattr(module, n, None))]
    return "\n\n".join(inspect.getsource(f).rstrip() for f in found)


def first_of(*names):
    """The first of names that numpy_gpt.layers defines: the textbook GELU has had two names."""
    return next((n for n in names if callable(getattr(layers, n, None))), names[0])


CODE = {
    "embed": source("embedding_forward", "embedding_backward"),
    "ln": source("layernorm_forward", "layernorm_backward"),
    "attn": source("linear_forward", "attention_forward", "attention_backward", "linear_backward"),
    "residual": source("residual_forward", "residual_backward"),
    "mlp": source(first_of("gelu_forward_textbook", "gelu_forward"),
                  first_of("gelu_backward_textbook", "gelu_backward")),
    "head": source("linear_forward", "linear_backward"),
    "softmax": source("softmax", "cross_entropy_forward", "cross_entropy_backward"),
    "model": source("gpt_forward", "gpt_backward", module=model),
}


# ------------------------------------------------------------------------------------------------
# the index's small pictures, drawn from the kid's real data as inline SVG


def thumbnails(d, k):
    W, Hh = 120, 72
    chars = d["vocab"]["chars"]

    def svg(body):
        return f'<svg viewBox="0 0 {W} {Hh}" class="thumb" aria-hidden="true">{body}</svg>'

    def blue(v):
        v = max(0.0, min(1.0, v))
        return f"rgb({round(250 - 205 * v)},{round(248 - 150 * v)},{round(245 - 75 * v)})"

    out = {}
    view = d["passage"] or d["prompt"]
    text, losses = view["text"][:24], view["losses"]
    cells = []
    for i, ch in enumerate(text.replace("\n", " ")[:24]):
        x, y = 6 + (i % 8) * 14, 10 + (i // 8) * 20
        loss = losses[i - 1] if 0 < i <= len(losses) and losses[i - 1] is not None else 0
        cells.append(f'<rect x="{x}" y="{y}" width="13" height="17" rx="2" fill="{blue(0.7 * loss / k["ln_V"])}"/>'
                     f'<text x="{x + 6.5}" y="{y + 13}" text-anchor="middle">{html.escape(ch)}</text>')
    out["task"] = svg("".join(cells))
    counts = d["vocab"]["counts"] or [1] * len(chars)
    top = max(counts)
    n = len(counts)
    out["vocabulary"] = svg("".join(
        f'<rect x="{4 + i * 112 / n:.1f}" y="{66 - 58 * math.sqrt(cnt / top):.1f}" '
        f'width="{max(0.8, 112 / n - 0.6):.1f}" '
        f'height="{58 * math.sqrt(cnt / top):.1f}" class="ink"/>' for i, cnt in enumerate(counts)))
    xy = np.array(d["embedding"]["pca"])
    lo, span = xy.min(axis=0), np.maximum(np.ptp(xy, axis=0), 1e-9)
    dots = []
    for (x, y), ch in zip(xy, chars):
        kind = "upper" if ch.isupper() else "lower" if ch.islower() else "other"
        dots.append(f'<circle cx="{8 + 104 * (x - lo[0]) / span[0]:.1f}" cy="{64 - 56 * (y - lo[1]) / span[1]:.1f}" '
                    f'r="2.4" class="{kind}"/>')
    out["embeddings"] = svg("".join(dots))
    sim = np.array(d["positions"]["similarity"])
    out["positions"] = svg(matrix_svg(sim, 16, 48, 60, diverge))
    att = np.array(d["prompt"]["attention"])                       # (L, H, T, T)
    out["attention"] = svg(matrix_svg(att[0, min(1, att.shape[1] - 1)], 16, 48, 60, lambda v: blue(v ** 0.5)))
    boxes = "".join(f'<rect x="{30 + 4 * i}" y="{14 + 10 * i}" width="60" height="14" rx="3" class="box"/>'
                    for i in range(4))
    out["block"] = svg('<rect x="10" y="4" width="100" height="8" rx="2" class="soft"/>' + boxes +
                       '<rect x="10" y="60" width="100" height="8" rx="2" class="soft"/>')
    probs = k["letters"]["bars"]
    out["letters"] = svg("".join(f'<rect x="{8 + i * 13.5}" y="{66 - 60 * p / max(probs[0], 1e-9):.1f}" width="10" '
                                 f'height="{60 * p / max(probs[0], 1e-9):.1f}" rx="1.5" class="ink"/>'
                                 for i, p in enumerate(probs)))
    log = d["log"]
    if log and len(log) > 1:
        steps = [e["step"] for e in log]
        vals = [e["val_loss"] for e in log] + [e["train_loss"] for e in log]
        s0, s1, v0, v1 = min(steps), max(steps) or 1, min(vals), max(vals)
        def line(key, cls):
            pts = " ".join(f"{6 + 108 * (e['step'] - s0) / ((s1 - s0) or 1):.1f},"
                           f"{8 + 56 * (v1 - e[key]) / ((v1 - v0) or 1):.1f}" for e in log)
            return f'<polyline points="{pts}" class="{cls}"/>'
        out["learning"] = svg(line("train_loss", "line upper") + line("val_loss", "line lower"))
    else:
        out["learning"] = svg('<polyline points="6,10 30,40 60,55 114,62" class="line upper"/>')
    parts = [("embeddings", k["V"] * k["C"] + k["P"] * k["C"]), ("blocks", k["L"] * k["per_block"]),
             ("head", k["V"] * k["C"] + 2 * k["C"])]
    total, x, rects = sum(p for _, p in parts), 6, []
    for (name, p), cls in zip(parts, ("other", "ink", "lower")):
        w = 108 * p / total
        rects.append(f'<rect x="{x:.1f}" y="26" width="{max(w - 1, 0.5):.1f}" height="20" rx="2" class="{cls}"/>')
        x += w
    out["behind"] = svg("".join(rects))
    out["playground"] = svg('<rect x="6" y="8" width="108" height="56" rx="5" class="soft"/>'
                            '<text x="12" y="26">ROMEO:</text><text x="12" y="42">What say</text>'
                            '<rect x="62" y="32" width="2" height="13" class="ink"/>')
    return out


def matrix_svg(m, n, x0, size, colour):
    """m (T, T) resampled to n x n cells in a size-pixel square at (x0 - size / 2, 6)."""
    T = len(m)
    idx = np.minimum((np.arange(n) * T / n).astype(int), T - 1)
    cell = size / n
    left = x0 - size / 2 + 12
    return "".join(f'<rect x="{left + j * cell:.2f}" y="{6 + i * cell:.2f}" width="{cell + 0.05:.2f}" '
                   f'height="{cell + 0.05:.2f}" fill="{colour(float(m[a][b]))}"/>'
                   for i, a in enumerate(idx) for j, b in enumerate(idx))


def diverge(v):
    t = max(-1.0, min(1.0, v))
    if t >= 0:
        return f"rgb({round(255 - 200 * t)},{round(255 - 140 * t)},255)"
    return f"rgb(255,{round(255 + 140 * t)},{round(255 + 200 * t)})"
