"""python -m numpy_gpt.ladder: train the rungs of the ladder (numpy_gpt/ladder.py) on the same batches,
steps, schedule and evaluation, and write their table and plot.

Files in --out (default out-ladder/), each written atomically:
    ladder.json         the run's settings and rungs, then each finished rung's figures and sample
    rungs/RUNG.npz      a rung's training state: weights, AdamW's moments, its step and evaluations
                        (written at every evaluation and on a stop, so --resume loses at most the
                        steps since the last one)
    ladder.md           the table: val and train loss, what each rung bought, parameters, time, samples
    ladder.png          val loss against step for every rung (needs matplotlib)
"""
import json
import math
import time
from pathlib import Path

import numpy as np

from . import ladder
# The pieces this command shares with numpy_gpt's trainer, imported in this one place.
from .machinery.checkpoint import atomic_write, read_npz
from .machinery.cli import (ArgumentParser, HelpFormatter, check_at_least, check_memory, check_output, check_seed, keep_freed_memory,
                  run_cli)
from .machinery.errors import UserError
from .data import SAMPLE, CharTokenizer, eval_batches, split_train_val, stream
from .machinery.corpus import default_prompt, load_text, sha256_of
from .machinery.loop import SAMPLE_CHARS, SAMPLE_TEMPERATURE, Progress, StopRequest, _clock, pyplot
from .optim import adamw_init, lr_at
from .sampling import generate

STEPS_MAX = 100_000          # --steps above this would run for days on a laptop: surely a typo
LR, WARMUP_STEPS = 3e-3, 100  # the kid's trainer's (numpy_gpt.machinery.cli); min_lr = LR / 100
STATE_FORMAT = "tiny-llm ladder rung state v1"

WHAT = {"uniform": "every character equally likely", "bigram": "a table: the next character from the last one",
        "attention": "embeddings and one attention head", "heads": "four heads and their projection",
        "mlp": "the MLP after attention", "block": "residual connections and LayerNorm: one block",
        "kid": "four blocks and dropout: the kid"}


def parser():
    p = ArgumentParser(prog="python -m numpy_gpt.ladder", formatter_class=HelpFormatter,
                       description="Train the ladder's rungs, from uniform guessing to the kid, on the same batches, "
                                   "steps, schedule and evaluation, and write their table and plot to --out.")
    p.add_argument("--rungs", default=None,
                   help=f"comma-separated rungs to train, of {','.join(ladder.RUNGS)} (default: all; with --resume, "
                        f"the run's)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps for every rung, 1..{STEPS_MAX} (default: 2000; with --resume, the run's)")
    p.add_argument("--eval-interval", type=int, default=None,
                   help="estimate every rung's train and val loss every N steps (default: 200; with --resume, "
                        "the run's)")
    p.add_argument("--eval-batches", type=int, default=None,
                   help="fixed batches per loss estimate, of each split (default: 20; with --resume, the run's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sequences of 128 characters per step (default: 32, the kid's; with --resume, the run's)")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the init, the batches, the dropout masks and the samples (default: 1337; with "
                        "--resume, the run's)")
    p.add_argument("--data", default=None,
                   help="a UTF-8 text file to train on (default: tinyshakespeare at data/tinyshakespeare.txt, "
                        "downloaded and checked if missing; with --resume, the run's)")
    p.add_argument("--out", default="out-ladder", help="folder for the states, the table and the plot")
    p.add_argument("--resume", action="store_true", help="continue the ladder in --out where it stopped")
    return p


DEFAULTS = {"steps": 2000, "eval_interval": 200, "eval_batches": 20, "batch_size": 32, "seed": 1337}
SETTINGS = ("steps", "eval_interval", "eval_batches", "batch_size", "seed")     # a resume must keep all of them


def parse_rungs(text):
    """"bigram,attention" -> the rungs in ladder order; an unknown name is a UserError listing the rungs."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ladder.RUNGS]
    if unknown or not names:
        raise UserError(f"unknown rung {', '.join(map(repr, unknown)) or 'list ' + repr(text)}; the rungs are "
                        f"{', '.join(ladder.RUNGS)} (pass some of them, comma-separated)")
    return [rung for rung in ladder.RUNGS if rung in names]


def check_args(args):
    """Bad flags, and a --resume that does not match the run in --out, before any work."""
    if args.rungs is not None:
        args.rungs = parse_rungs(args.rungs)
    if args.steps is not None and not 1 <= args.steps <= STEPS_MAX:
        raise UserError(f"--steps must be in 1..{STEPS_MAX}, got {args.steps} (the default is {DEFAULTS['steps']})")
    check_at_least(args, 1, *(f"--{k.replace('_', '-')}" for k in SETTINGS[1:4] if getattr(args, k) is not None))
    if args.seed is not None:
        check_seed(args.seed)
    out = Path(args.out)
    check_output(out, "--out", folder=True)
    run_file = out / "ladder.json"
    if not args.resume:
        if run_file.exists():
            raise UserError(f"{out} already holds a ladder; pass --resume to continue it, or --out DIR to start "
                            f"another")
        args.rungs = args.rungs or list(ladder.RUNGS)
        for k in SETTINGS:
            if getattr(args, k) is None:
                setattr(args, k, DEFAULTS[k])
        return check_sizes(args)
    if not run_file.exists():
        raise UserError(f"--resume, but {out} holds no ladder ({run_file} is missing); drop --resume to start one")
    run = read_run(run_file)
    if args.rungs is not None and args.rungs != run["rungs"]:
        raise UserError(f"{out} is a run of {','.join(run['rungs'])}, not of {','.join(args.rungs)}: resume it with "
                        f"--rungs {','.join(run['rungs'])} (or no --rungs), or pass --out DIR to train "
                        f"{','.join(args.rungs)} there")
    args.rungs = run["rungs"]
    if args.data is None:
        args.data = run.get("data_path")
    for k in SETTINGS:
        if getattr(args, k) is None:
            setattr(args, k, run["settings"][k])
        elif getattr(args, k) != run["settings"][k]:
            raise UserError(f"{out} was run with --{k.replace('_', '-')} {run['settings'][k]}, not {getattr(args, k)}; "
                            f"leave it out to resume, or pass --out DIR to start another ladder")
    return check_sizes(args)


def check_sizes(args):
    """Refuse a --batch-size or --eval-batches whose batches and largest rung (the kid) cannot fit in memory."""
    kid = ladder.rung_config("kid")
    check_memory(kid.n_layer, kid.n_embd, kid.block_size, args.batch_size, 2 * args.eval_batches + 1, 4,
                 "lower --batch-size or --eval-batches")
    return args


def read_run(path):
    try:
        run = json.loads(Path(path).read_text(encoding="utf-8"))
        if not (isinstance(run["rungs"], list) and all(r in ladder.RUNGS for r in run["rungs"])
                and all(type(run["settings"][k]) is int for k in SETTINGS)):
            raise ValueError("unexpected contents")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a ladder's ladder.json ({e}); pass --out DIR for a new ladder") from None
    return run


# ------------------------------------------------------------------------------------------------
# one rung's training state: OUT/rungs/RUNG.npz


def save_rung_state(path, rung, params, opt, meta):
    arrays = {"__format__": np.array(STATE_FORMAT), "__meta__": np.array(json.dumps({**meta, "rung": rung,
                                                                                      "adam_step": opt["step"]}))}
    for name in params:
        arrays[f"params/{name}"] = params[name]
        arrays[f"m/{name}"], arrays[f"v/{name}"] = opt["m"][name], opt["v"][name]
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_rung_state(path, rung, config):
    """-> (params, opt, meta) from a rung's state; a state of another rung, or a damaged one, is a UserError."""
    def read(path, z):
        if "__format__" not in z.files or str(z["__format__"]) != STATE_FORMAT:
            raise UserError(f"{path} is not a ladder rung's state; move it away, or pass --out DIR for a new ladder")
        meta = json.loads(str(z["__meta__"]))
        if meta.get("rung") != rung:
            raise UserError(f"{path} holds a run of the {meta.get('rung')!r} rung, not of {rung!r}; it cannot be "
                            f"resumed as {rung}: move it away, or pass --out DIR for a new ladder")
        shapes = ladder.rung_param_shapes(rung, config)
        expected = {f"{part}/{name}" for part in ("params", "m", "v") for name in shapes} | {"__format__", "__meta__"}
        if set(z.files) != expected:
            raise UserError(f"{path} does not hold the {rung} rung's tensors; it is damaged or foreign")
        parts = {part: {name: z[f"{part}/{name}"] for name in shapes} for part in ("params", "m", "v")}
        for part in parts.values():
            for name, a in part.items():
                if a.shape != shapes[name] or not np.isfinite(a).all():
                    raise UserError(f"{path}: {name} has shape {a.shape} (expected {shapes[name]}) or is not finite")
        return parts["params"], {"step": meta["adam_step"], "m": parts["m"], "v": parts["v"]}, meta
    return read_npz(path, read, "rung state", "pass --out with the ladder's folder", "damaged",
                    "move it away to train that rung again")


# ------------------------------------------------------------------------------------------------
# training the rungs


def mean_loss(rung, params, config, batches):
    return float(np.mean([ladder.rung_forward(rung, params, config, x, y)[1] for x, y in batches]))


def sample(rung, params, config, tokenizer, prompt, seed):
    """SAMPLE_CHARS characters after the prompt, from the same random numbers (the SAMPLE stream) for every rung."""
    def last_logits(ids):
        return ladder.rung_forward(rung, params, config, np.array([ids]))[0][0, -1]            # (V,)
    tokens = [t for t, _ in generate(last_logits, None, tokenizer.encode(prompt), SAMPLE_CHARS, config.block_size,
                                     stream(seed, SAMPLE), SAMPLE_TEMPERATURE, use_cache=False)]
    return prompt + tokenizer.decode(tokens)


def train_one(rung, args, data, position, stop):
    """Train one rung to args.steps (from its state, when there is one) -> its results, or None on a stop."""
    tokenizer, train_ids, evals = data
    config = ladder.rung_config(rung, vocab_size=tokenizer.vocab_size)
    path = Path(args.out) / "rungs" / f"{rung}.npz"
    if path.exists():
        params, opt, meta = load_rung_state(path, rung, config)
    else:
        params = ladder.init_rung(rung, config, args.seed)
        opt, meta = adamw_init(params), {"step": 0, "log": [], "elapsed_s": 0.0}
    n_params = sum(p.size for p in params.values())
    step, log = meta["step"], meta["log"]
    print(f"rung {position}: {rung} ({WHAT[rung]}), {n_params:,} parameters"
          + (f", resumed at step {step}" if step else ""), flush=True)
    start = time.perf_counter()
    progress = Progress(args.steps, args.eval_interval, first_step=step)

    def elapsed():
        return meta["elapsed_s"] + time.perf_counter() - start

    def save():
        save_rung_state(path, rung, params, opt, {"step": step, "log": log, "elapsed_s": elapsed()})

    steps = 0 if rung == "uniform" else args.steps           # nothing to train: one evaluation says it all
    while True:
        if (step % args.eval_interval == 0 or step == steps) and not (log and log[-1]["step"] == step):
            t0 = time.perf_counter()
            log.append({"step": step, "train_loss": mean_loss(rung, params, config, evals["train"]),
                        "val_loss": mean_loss(rung, params, config, evals["val"]), "elapsed_s": round(elapsed(), 1)})
            save()
            progress.evaluated(time.perf_counter() - t0)
            progress.say(f"  {rung} step {step}: train loss {log[-1]['train_loss']:.4f}, "
                         f"val loss {log[-1]['val_loss']:.4f}")
        if step == steps:
            break
        if stop.signum:
            save()
            progress.close()
            return None
        lr = lr_at(step, LR, LR / 100, WARMUP_STEPS, args.steps)
        loss = ladder.train_step(rung, params, opt, config, train_ids, step, lr, args.seed, args.batch_size)
        step += 1
        if not math.isfinite(loss):
            raise UserError(f"the {rung} rung's loss became {loss} at step {step}; {path} holds its last good state")
        tokens = args.batch_size * config.block_size * (step - meta["step"])            # since this process began
        progress.update(step, loss, tokens / (elapsed() - meta["elapsed_s"]))
    progress.close()
    text = sample(rung, params, config, tokenizer, default_prompt(tokenizer.chars), args.seed)
    seconds = round(elapsed(), 1)
    print(f"  {rung} done: val loss {log[-1]['val_loss']:.4f}, {seconds:.0f} s", flush=True)
    return {"rung": rung, "parameters": n_params, "train_loss": log[-1]["train_loss"], "val_loss": log[-1]["val_loss"],
            "seconds": seconds, "sample": text, "log": log}


def step_seconds(rung, config, train_ids, batch_size, seed):
    """Seconds for one training step of the rung at the run's batch size, on weights of its own (the
    second of two: the first pays for warming up), for the ladder's ETA."""
    params = ladder.init_rung(rung, config, seed)
    opt = adamw_init(params)
    for step in range(2):
        began = time.perf_counter()
        ladder.train_step(rung, params, opt, config, train_ids, step, LR, seed, batch_size)
    return time.perf_counter() - began


def ladder_seconds(rungs, args, tokenizer, train_ids):
    """-> rung -> its estimated seconds: its steps and evaluations (an evaluation batch is a forward, about
    a third of a step) at step_seconds' time, on the machine as busy as it is now."""
    evals = args.steps // args.eval_interval + 1
    return {rung: 0.0 if rung == "uniform" else
            step_seconds(rung, ladder.rung_config(rung, vocab_size=tokenizer.vocab_size), train_ids,
                         args.batch_size, args.seed) * (args.steps + evals * 2 * args.eval_batches / 3)
            for rung in rungs}


def counted_bigram_loss(train_ids, val_batches, V):
    """The val loss of a bigram table read straight off the train split, with no training: row a of the
    table is log((count(a, b) + 1) / sum over b), where count(a, b) is how often b follows a. The
    one added to every count keeps a pair the train split never shows from costing infinity."""
    counts = np.ones((V, V))                                                            # (V, V)
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1)
    logprobs = np.log(counts / counts.sum(axis=1, keepdims=True))                       # (V, V)
    return float(np.mean([-logprobs[x, y].mean() for x, y in val_batches]))


def main(argv=None):
    args = check_args(parser().parse_args(argv))
    keep_freed_memory()
    text = load_text(args.data)
    tokenizer = CharTokenizer.from_text(text)
    block_size = ladder.rung_config("kid").block_size
    train_ids, val_ids = split_train_val(tokenizer.encode(text), block_size)
    evals = {name: eval_batches(ids, args.eval_batches, args.batch_size, block_size, args.seed, split=i)
             for i, (name, ids) in enumerate((("train", train_ids), ("val", val_ids)))}
    out = Path(args.out)
    run_file = out / "ladder.json"
    settings = {k: getattr(args, k) for k in SETTINGS}
    data_id = {"vocab": tokenizer.chars, "sha256": sha256_of(text.encode("utf-8"))}
    if args.resume:
        run = read_run(run_file)
        if run.get("data") != data_id:
            raise UserError(f"{out} was trained on another text; pass the same --data to resume it")
    else:
        run = {"rungs": args.rungs, "settings": settings, "data": data_id, "results": {},
               "data_path": None if args.data is None else str(Path(args.data).resolve())}
        atomic_write(run_file, lambda f: f.write(json.dumps(run, indent=1).encode()))
    run["counted_bigram"] = counted_bigram_loss(train_ids, evals["val"], tokenizer.vocab_size)
    print(f"the ladder: {', '.join(args.rungs)}; {args.steps} steps of {args.batch_size} x {block_size} characters "
          f"each, lr {LR} (warmup {WARMUP_STEPS}, cosine), evaluated every {args.eval_interval} steps on "
          f"{args.eval_batches} fixed batches", flush=True)
    todo = [rung for rung in args.rungs if rung not in run["results"]]
    estimate = ladder_seconds(todo, args, tokenizer, train_ids)
    with StopRequest() as stop:
        for i, rung in enumerate(args.rungs, 1):
            position = f"{i} of {len(args.rungs)}"
            if rung in run["results"]:
                print(f"rung {position}: {rung} is trained already (val loss {run['results'][rung]['val_loss']:.4f})")
                continue
            left = sum(estimate[r] for r in todo[todo.index(rung):])
            print(f"the ladder: about {_clock(left)} to go (a timed step of each rung, times its steps)", flush=True)
            result = train_one(rung, args, (tokenizer, train_ids, evals), position, stop)
            if result is None:
                print(f"stopped by signal {stop.signum}; the states are in {out / 'rungs'}: continue with --resume")
                return 128 + stop.signum
            run["results"][rung] = result
            atomic_write(run_file, lambda f: f.write(json.dumps(run, indent=1).encode()))
            write_table(run, out / "ladder.md")
            plot(run, out / "ladder.png")
    atomic_write(run_file, lambda f: f.write(json.dumps(run, indent=1).encode()))
    write_table(run, out / "ladder.md")
    plot(run, out / "ladder.png")
    total = sum(r["seconds"] for r in run["results"].values())
    print(f"done: the table is in {out / 'ladder.md'}; {total / 60:.1f} minutes of training and evaluation in all")
    return 0


# ------------------------------------------------------------------------------------------------
# the table and the plot


def write_table(run, path):
    """ladder.md: one row per rung trained so far, then each rung's sample."""
    s = run["settings"]
    rows = [run["results"][r] for r in run["rungs"] if r in run["results"]]
    lines = [f"{s['steps']} steps of {s['batch_size']} sequences for every rung; losses in nats per character, "
             f"the mean over {s['eval_batches']} fixed batches of each split.", "",
             "| rung | adds | parameters | val loss | bought (nats) | train loss | time |",
             "|---|---|---:|---:|---:|---:|---:|"]
    previous = None
    for r in rows:
        bought = "" if previous is None else f"{previous - r['val_loss']:+.3f}"
        lines.append(f"| {r['rung']} | {WHAT[r['rung']]} | {r['parameters']:,} | {r['val_loss']:.4f} | {bought} | "
                     f"{r['train_loss']:.4f} | {_minutes(r['seconds'])} |")
        previous = r["val_loss"]
    total = sum(r["seconds"] for r in rows)
    lines += ["", f"The rungs above took {_minutes(total)} in all, training and evaluation."]
    if "bigram" in run["results"] and "counted_bigram" in run:
        lines += ["", f"A bigram table counted straight from the train split, with no training (each pair's count "
                      f"plus one, normalized by row), has a val loss of {run['counted_bigram']:.4f}."]
    lines += ["", "Each rung's sample: the same prompt and random numbers, temperature "
                  f"{SAMPLE_TEMPERATURE}, {SAMPLE_CHARS} characters.", ""]
    for r in rows:
        lines += [f"**{r['rung']}** (val loss {r['val_loss']:.2f})", "", "```", r["sample"], "```", ""]
    atomic_write(path, lambda f: f.write(("\n".join(lines).rstrip() + "\n").encode()))


def _minutes(seconds):
    return f"{seconds:.0f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def plot(run, path):
    """ladder.png: left, every rung's val loss against step (uniform a flat line); right, each rung's final
    val loss as a bar. Needs matplotlib."""
    plt = pyplot("ladder.png")
    if plt is None:
        return
    rows = [run["results"][r] for r in run["rungs"] if r in run["results"]]
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for i, r in enumerate(rows):
        log, color = r["log"], f"C{i}"
        if r["rung"] == "uniform":
            curves.axhline(log[0]["val_loss"], color=color, linestyle="--", label="uniform")
        else:
            curves.plot([e["step"] for e in log], [e["val_loss"] for e in log], color=color, marker="o",
                        markersize=3, label=r["rung"])
    curves.set_xlim(0, run["settings"]["steps"])
    curves.set_xlabel("step")
    curves.set_ylabel("val loss (nats per character)")
    curves.grid(alpha=0.3)
    curves.legend()
    names = [r["rung"] for r in rows]
    bars.barh(names, [r["val_loss"] for r in rows], color=[f"C{i}" for i in range(len(rows))])
    for y, r in enumerate(rows):
        bars.text(r["val_loss"], y, f" {r['val_loss']:.3f}", va="center")
    bars.invert_yaxis()
    bars.set_xlim(0, 1.25 * max(r["val_loss"] for r in rows))
    bars.set_xlabel(f"val loss after {run['settings']['steps']} steps")
    bars.grid(alpha=0.3, axis="x")
    fig.suptitle("The ladder: each rung adds one idea; lower is better")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


if __name__ == "__main__":
    run_cli(main)
