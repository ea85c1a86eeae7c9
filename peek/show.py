"""python -m peek show: what the kid learned, printed for a terminal.

Every number comes from peek.analysis (numpy_gpt, float64); this module only lays them out.
"""
import numpy as np

from .analysis import show_char
from .habits import CLEAR, NEAR

BAR = "▁▂▃▄▅▆▇█"


def report(data):
    """peek.json's dict (peek.export.build_export) -> the whole text that `peek show` prints."""
    parts = [architecture(data), parameters(data), vocabulary(data), neighbours(data), positions(data),
             predictions(data["prompt"], data["vocab"]["chars"]), attention(data["prompt"], data["vocab"]["chars"]),
             gradients(data["prompt"], data["vocab"]["chars"])]
    if data.get("habits"):
        parts.append(head_habits(data["habits"]))
    if data["log"]:
        parts.append(training(data["log"]))
    return "\n\n".join(p.rstrip() for p in parts) + "\n"


def heading(title):
    return f"{title}\n{'-' * len(title)}"


def architecture(d):
    c = d["config"]
    C, D = c["n_embd"], c["n_embd"] // c["n_head"]
    step = d["checkpoint"]["step"]
    return "\n".join([
        heading(f"The kid: {d['checkpoint']['file']}" + (f", step {step}" if step is not None else "")),
        f"{d['n_params']:,} parameters. A character-level GPT: {c['vocab_size']} characters, "
        f"{c['block_size']} of context, {c['n_layer']} blocks of {c['n_head']} heads x {D} = {C} wide.",
        f"  characters   -> wte ({c['vocab_size']} x {C}) + wpe ({c['block_size']} x {C})",
        f"  {c['n_layer']} x block    x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))   "
        f"(attention: {c['n_head']} heads of {D}; MLP: {C} -> {4 * C} -> {C}, GELU)",
        f"  ln_f, lm_head ({C} -> {c['vocab_size']}) -> the next character's logits"])


def parameters(d):
    rows = [(r["name"], "x".join(map(str, r["shape"])), f"{r['count']:,}", f"{r['mean']:+.4f}",
             f"{r['std']:.4f}", f"{r['norm']:.3f}") for r in d["params"]]
    rows.append(("total", "", f"{d['n_params']:,}", "", "", ""))
    return heading("Parameters") + "\n" + table(("name", "shape", "count", "mean", "std", "norm"), rows, "<<>>>>")


def vocabulary(d):
    chars, counts = d["vocab"]["chars"], d["vocab"]["counts"]
    cells = [f"{i:>2} {show_char(c)}" + (f" {counts[i]:,}" if counts else "") for i, c in enumerate(chars)]
    width = max(map(len, cells)) + 2
    per_line = max(1, 96 // width)
    lines = ["".join(cell.ljust(width) for cell in cells[i:i + per_line]) for i in range(0, len(cells), per_line)]
    note = f" (id, character{', count in ' + d['vocab']['corpus'] if counts else ''}; ⏎ newline, ␣ space)"
    return heading(f"Vocabulary: {len(chars)} characters") + note + "\n" + "\n".join(lines)


def neighbours(d):
    chars = d["vocab"]["chars"]
    lines = [f"  {show_char(chars[i])}  " + "  ".join(f"{show_char(chars[j])} {cos:.2f}" for j, cos in row)
             for i, row in enumerate(d["embedding"]["neighbours"])]
    return (heading("Nearest characters") + " (cosine similarity of the embeddings, wte)\n"
            + "\n".join(lines))


def positions(d):
    sims = d["positions"]["neighbours"]
    lo, hi = min(sims), max(sims)
    lines = [f"  {t:>3}-{min(t + 16, len(sims)):<3} " + sparkline(sims[t:t + 16], lo, hi)
             + "  " + " ".join(f"{s:+.2f}" for s in sims[t:t + 16:4]) for t in range(0, len(sims), 16)]
    return (heading("Positions") + " (cosine of each position's vector, wpe[t], with the next one's; "
            f"mean {np.mean(sims):+.3f}; ▁ is {lo:+.2f}, █ {hi:+.2f})\n" + "\n".join(lines))


def predictions(view, chars):
    lines = []
    for t, (top, loss) in enumerate(zip(view["top"], view["losses"])):
        seen = "".join(show_char(c) for c in view["text"][max(0, t - 11):t + 1])
        guesses = "  ".join(f"{show_char(chars[j])} {p:.3f}" for j, p in top)
        known = (f"   next {show_char(view['text'][t + 1])}: loss {loss:.3f}" if loss is not None else "")
        lines.append(f"  {seen:>12} -> {guesses}{known}")
    return heading(f"Next-character predictions for {view['text']!r}") + " (top 5 with probabilities)\n" + "\n".join(lines)


def attention(view, chars):
    att = np.array(view["attention"])                                  # (L, H, T, T)
    L, H, T, _ = att.shape
    text = [show_char(c) for c in view["text"]]
    first = max(0, T - 32)                                             # the last 32 positions at most
    lines = ["  query     " + " ".join(text[first:]),
             "  " + "-" * (10 + 2 * (T - first))]
    for l in range(L):
        for h in range(H):
            best = view["strongest"][l][h]
            peak = att[l, h, np.arange(T), best].mean()
            lines.append(f"  L{l} H{h}     " + " ".join(text[best[t]] for t in range(first, T))
                         + f"   mean top weight {peak:.2f}")
    note = f" (the positions before {first} are not shown)" if first else ""
    return (heading("Attention") + " (for each layer L and head H, the character each query position attends "
            f"to most){note}\n" + "\n".join(lines))


def gradients(view, chars):
    g = view["gradients"]
    if g is None:
        return heading("Gradients") + "\n  (a prompt of one character has no next character to learn from)"
    text = view["text"]
    top = max(g["inputs"]) or 1.0
    lines = [f"  {show_char(c)}  {'█' * round(24 * n / top):<24} {n:.4f}" for c, n in zip(text, g["inputs"])]
    params = [f"  {name:<26} {norm:.4f}" for name, norm in g["params"][:8]]
    return "\n".join([
        heading("Gradients") + f" (one numpy_gpt backward of the prompt's mean loss, {g['loss']:.4f}, over its "
        f"{len(text) - 1} known next characters)",
        "How strongly the loss depends on each input character: |d loss / d x[t]|, x[t] its embedding plus position",
        *lines,
        "The parameter tensors with the largest gradients (|d loss / d W|):",
        *params])


def head_habits(habits):
    """The layer x head table of peek.habits: each head's clearest habit and its figure, then its shares."""
    rows = []
    for row in habits:
        for h in row:
            figure = "" if h["habit"] in ("near", "spread") else f"{100 * h['figure']:.0f}%"     # spread: see distance
            rows.append((f"L{h['layer']} H{h['head']}", h["label"], figure, f"{h['mean_distance']:.1f}",
                         *(f"{100 * h[k]:.0f}%" for k in ("previous", "self", "first", "same_char", "last_space"))))
    chance = habits[0][0]["chance"]
    names = {"previous": "previous", "self": "itself", "first": "first", "same_char": "same char",
             "last_space": "last space"}
    even = ", ".join(f"{names[k]} {100 * chance[k]:.0f}%" for k in names)
    return "\n".join([
        heading("What each head does") + " (its attention on held-out text: the validation split)",
        table(("head", "clearest habit", "figure", "distance", *names.values()), rows, "<<>>>>>>>"),
        "  The share of each head's weight on each habit; distance is how far back it looks, in characters.",
        f"  Even attention would give {even}.",
        "  The clearest habit is the one furthest above that; figure is its share. A head with no habit",
        f"  {100 * CLEAR:.0f} points above it looks at the last few characters, when it looks at most",
        f"  {100 * NEAR:.0f}% as far back as even attention would, and otherwise spreads its attention."])


def training(log):
    last = log[-1]
    rows = [(str(e["step"]), f"{e['train_loss']:.4f}", f"{e['val_loss']:.4f}",
             f"{e['elapsed_s'] / 60:.1f}" if "elapsed_s" in e else "") for e in log]
    return (heading("Training") + f" (the run's log.jsonl: val loss {last['val_loss']:.4f} at its last "
            f"evaluation, step {last['step']})\n"
            + table(("step", "train loss", "val loss", "minutes"), rows, ">>>>"))


def table(header, rows, align):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "  " + "  ".join(str(v).ljust(w) if a == "<" else str(v).rjust(w) for v, w, a in zip(r, widths, align))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)]).rstrip()


def sparkline(values, lo, hi):
    """Values in [lo, hi] as one block character each, lowest ▁, highest █."""
    steps = len(BAR) - 1
    span = (hi - lo) or 1.0
    return "".join(BAR[int(round((min(max(v, lo), hi) - lo) / span * steps))] for v in values)
