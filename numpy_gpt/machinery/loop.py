"""The training loop of both trainers: python -m numpy_gpt.train and python -m torch_gpt.train.

The loop owns everything the two share: the evaluation cadence and the log rows, the samples from
--sample-prompt, the weight snapshots, the training state (kid.pt), resume, signals, the NaN stop and
the progress line. A backend supplies only the parts that are its own
(numpy_gpt.machinery.threaded.NumpyBackend, torch_gpt.train.TorchBackend):

    name                   "numpy_gpt" or "torch_gpt", written into kid.npz and kid.pt
    master                 whether this process prints and writes the files (rank 0 under torchrun)
    sync_every             read the loss every N steps (a GPU would wait for it every step)
    threads                compute threads, recorded in kid.pt (None where they do not change the sums)
    precision              "float32", "float64" or "bf16 autocast" (torch_gpt's --bf16), with " (compiled)"
                           after it under torch_gpt's --compile, and " (CUDA graph)" under its
                           --cuda-graph; recorded in kid.pt
    start(data, state)     build the model and optimizer: fresh, or from a training state (load_state)
    train_step(step, lr)   one optimizer step on step's micro-batches -> the loss (float() reads it)
    evaluate(split)        the mean loss over the fixed batches of "train" or "val"
    sampling()             a context manager giving (prefill, decode) over a fresh KV cache
    params()               the weights, name -> NumPy array
    optimizer_state()      {"m": name -> array, "v": name -> array, "adam_step": int}
    agree(flags)           [stop signal, loss not finite], made the same on every process

It imports no torch, so numpy_gpt trains with NumPy alone. Files written to --out, each atomically:
    log.jsonl                   one JSON object per evaluation: losses, lr, tokens/s, time, the sample,
                                and the evaluation's own time (eval_s: its losses, sample and snapshot)
    checkpoints/step_NNNNN.npz  a weights snapshot at each evaluation (the shared weights format)
    kid.pt                      the training state (numpy_gpt.machinery.checkpoint.save_state), each evaluation
                                and on a stop: either trainer continues it with --resume
    kid.npz                     the final weights
    loss.png                    train and val loss against step (needs matplotlib)
A run killed at any moment, even by kill -9, loses at most the steps since the last evaluation.
"""
import json
import math
import signal
import sys
import time
from collections import namedtuple
from pathlib import Path

from .checkpoint import atomic_write, load_state, load_weights, save_state, save_weights
from .cli import RUN_FLAGS, check_output, check_training_args, keep_freed_memory, model_config
from ..data import SAMPLE, CharTokenizer, eval_batches, split_train_val, stream
from ..optim import lr_at
from ..sampling import generate
from .corpus import default_prompt, load_text
from .errors import UserError

SAMPLE_CHARS, SAMPLE_TEMPERATURE = 200, 0.8
# the settings that shape the trajectory: a resumed run must use the same ones
TRAJECTORY_FLAGS = ("batch_size", "seed", "dtype", "lr", "min_lr", "warmup_steps", "weight_decay",
                    "beta1", "beta2", "grad_clip", "dropout", "micro_batches")

Data = namedtuple("Data", "tokenizer config train_ids val_ids evals")


def check_run(args):
    """Impossible settings, and the checks on --out and --resume, before any work: a new run never
    overwrites an old one. -> args, --min-lr filled in."""
    check_training_args(args)
    if args.sample_prompt == "":
        raise UserError("--sample-prompt is empty; give it some text, or leave it out for the default")
    out = Path(args.out)
    check_output(out, "--out", folder=True)
    kid_pt = out / "kid.pt"
    if args.resume and not kid_pt.exists():
        raise UserError(f"--resume, but there is no checkpoint at {kid_pt}; drop --resume to start a new run")
    if not args.resume and (kid_pt.exists() or (out / "kid.npz").exists()):
        raise UserError(f"{out} already holds a run ({kid_pt.name if kid_pt.exists() else 'kid.npz'}); pass "
                        f"--resume to continue it, or --out DIR to start another")
    keep_freed_memory()
    return args


def check_resume(state, config, tokenizer, args, path):
    """A resumed run must be the same run: same model, vocabulary and trajectory settings."""
    if state["vocab"] != tokenizer.chars:       # before the config, whose vocab_size no flag sets
        raise UserError(f"{path} was trained on a text with another vocabulary ({len(state['vocab'])} characters; "
                        f"this --data has {len(tokenizer.chars)}); pass the same --data")
    if state["config"] != config:
        diff = [f"{k}={v} (flags say {getattr(config, k)})" for k, v in state["config"].to_dict().items()
                if getattr(config, k) != v]
        raise UserError(f"{path} was trained with {', '.join(diff)}; pass the same flags to resume it, "
                        f"or a new --out to start another run")
    diff = [f"{state['settings'][k]} micro-batches per step (processes x --grad-accum; now {args.micro_batches})"
            if k == "micro_batches" else f"--{k.replace('_', '-')} {state['settings'][k]} (flags say {getattr(args, k)})"
            for k in TRAJECTORY_FLAGS if state["settings"].get(k) != getattr(args, k)]
    if diff:
        raise UserError(f"{path} was trained with {', '.join(diff)}; pass the same settings to resume it "
                        f"(--steps may change), or a new --out to start another run")


def resume_run_flags(state, args, say):
    """A resumed run goes on as it was started: the RUN_FLAGS its command leaves out (args.unset) are the
    state's. One given that differs is the user's choice (a longer --steps trains on); say so once."""
    run = state.get("run", {})          # a state written before "run" existed: the flags, as given
    for k in RUN_FLAGS:
        if k not in run or run[k] == getattr(args, k):
            continue
        flag = "--" + k.replace("_", "-")
        if k in args.unset:
            setattr(args, k, run[k])
        elif k == "steps":
            say(f"note: the run was started with --steps {run[k]}; it now goes to {args.steps}, and the "
                f"learning rate decays over the new length from here on")
        else:
            say(f"note: the run was started with {flag} {run[k]!r}; it goes on with {getattr(args, k)!r}")


def remove_stale_temporaries(out):
    """Delete the temporary files a writer killed mid-write left behind (atomic_write's .NAME.XXXX.tmp):
    never whole, never read, and each kill -9 would otherwise leave one more."""
    for folder in (out, out / "checkpoints"):
        for path in folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def sample_text(backend, tokenizer, prompt, block_size, seed):
    """SAMPLE_CHARS characters after the prompt, always from the same random numbers (the SAMPLE stream)."""
    with backend.sampling() as (prefill, decode):
        tokens = [t for t, _ in generate(prefill, decode, tokenizer.encode(prompt), SAMPLE_CHARS, block_size,
                                         stream(seed, SAMPLE), SAMPLE_TEMPERATURE)]
    return prompt + tokenizer.decode(tokens)


def train(args, backend):
    """One process's training run, from check_run's args (with args.micro_batches set) -> its exit status."""
    out = Path(args.out)
    kid_pt = out / "kid.pt"
    say = print if backend.master else (lambda *a, **k: None)
    state = load_state(kid_pt) if args.resume else None
    if state:
        resume_run_flags(state, args, say)
    data = prepare_data(args)
    tokenizer, config = data.tokenizer, data.config
    if state:
        check_resume(state, config, tokenizer, args, kid_pt)
    if args.sample_prompt is None:
        args.sample_prompt = default_prompt(tokenizer.chars)
    try:
        tokenizer.encode(args.sample_prompt)
    except UserError as e:
        raise UserError(f"--sample-prompt has {e}") from None
    if backend.master:
        remove_stale_temporaries(out)
    backend.start(data, state)

    step, log, elapsed_before = 0, [], 0.0
    if state:
        step, elapsed_before = state["step"], state["elapsed_s"]
        if (out / "log.jsonl").exists():     # keep what the state had seen; drop later lines
            log = [e for e in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if e["step"] <= step]
        # a stop that lands on the last step leaves its evaluation and kid.npz to this run
        finished = (bool(log) and log[-1]["step"] == step and (out / "kid.npz").exists()
                    and load_weights(out / "kid.npz")[3].get("step") == step)
        if step > args.steps or (step == args.steps and finished):
            say(f"{kid_pt} is already at step {step} of --steps {args.steps}: nothing to do; raise --steps "
                f"to train longer")
            return 0
        say(f"resuming {kid_pt} at step {step} of {args.steps}")
        if state["backend"] != backend.name:
            say(f"note: {kid_pt} was written by {state['backend']}; continuing it with {backend.name} matches a run "
                f"that never switched to within float rounding (the parity tolerance), not bit for bit")
        elif state.get("precision", args.dtype) != backend.precision:
            say(f"note: {kid_pt} was trained in {state.get('precision', args.dtype)} and goes on in "
                f"{backend.precision}: a valid run, but not the one that never stopped")
        elif state["threads"] not in (None, backend.threads):    # CPU sums split their work by thread count
            say(f"warning: {kid_pt} was trained with {state['threads']} CPU threads and this run has "
                f"{backend.threads}, so it will not end bit-identical to a run that never stopped; "
                f"set OMP_NUM_THREADS={state['threads']} for that")

    # the counters and clocks that the functions below and the loop read and update
    tokens_per_step = args.batch_size * config.block_size * args.micro_batches
    rate, stopped = state["tokens_per_s"] if state else 0.0, None
    progress = Progress(args.steps, args.eval_interval, first_step=step) if backend.master else None
    start = mark_time = time.perf_counter()
    mark_step = step

    def lr(s):
        return lr_at(s, args.lr, args.min_lr, args.warmup_steps, args.steps)

    def training_state(params):
        return {**backend.optimizer_state(), "params": params, "step": step, "config": config.to_dict(),
                "vocab": tokenizer.chars, "settings": {k: getattr(args, k) for k in TRAJECTORY_FLAGS},
                "run": {k: getattr(args, k) for k in RUN_FLAGS},
                "elapsed_s": elapsed_before + time.perf_counter() - start, "tokens_per_s": rate,
                "threads": backend.threads, "backend": backend.name, "precision": backend.precision}

    def evaluate():
        began = time.perf_counter()
        entry = {"step": step, "train_loss": backend.evaluate("train"), "val_loss": backend.evaluate("val"),
                 "lr": lr(min(step, args.steps - 1)), "tokens_per_s": round(rate),
                 "elapsed_s": round(elapsed_before + time.perf_counter() - start, 1),
                 "sample": sample_text(backend, tokenizer, args.sample_prompt, config.block_size, args.seed)}
        params = backend.params()
        save_weights(out / "checkpoints" / f"step_{step:05d}.npz", params, config, tokenizer.chars,
                     meta={k: entry[k] for k in ("step", "train_loss", "val_loss")})
        entry["eval_s"] = round(time.perf_counter() - began, 2)      # the losses, the sample and the snapshot
        log.append(entry)
        write_log(out / "log.jsonl", log)
        save_state(kid_pt, training_state(params))
        plot_losses(log, out / "loss.png", say=progress.say)
        progress.say(f"step {step}: train loss {entry['train_loss']:.4f}, val loss {entry['val_loss']:.4f}, "
                     f"{entry['elapsed_s']:.0f}s\n{entry['sample']}\n")

    with StopRequest() as stop:
        while True:
            # a resumed run evaluates its first step too unless the log has it: a stop comes after
            # step += 1, before that step's evaluation at the top of the next pass
            logged = bool(log) and log[-1]["step"] == step
            if backend.master and (step % args.eval_interval == 0 or step == args.steps) and not logged:
                t0 = time.perf_counter()
                evaluate()
                progress.evaluated(time.perf_counter() - t0)
                mark_time, mark_step = time.perf_counter(), step     # tokens/s counts training time only
            if step == args.steps:
                break
            loss = backend.train_step(step, lr(step))
            step += 1
            if step % backend.sync_every == 0 or step == args.steps:
                loss = float(loss)
                stop_signal, nonfinite = backend.agree([stop.signum or 0, not math.isfinite(loss)])
                if nonfinite:
                    raise UserError(f"the loss became {loss} at step {step}; stopped without saving. {kid_pt} "
                                    f"still holds the last good state. Try a lower --lr (now {args.lr})"
                                    f"{' or --grad-clip 1' if not args.grad_clip else ''}")
                if stop_signal:
                    stopped = int(stop_signal)
                    break
                now = time.perf_counter()
                recent = tokens_per_step * (step - mark_step) / (now - mark_time)
                rate = 0.9 * rate + 0.1 * recent if rate else recent
                mark_time, mark_step = now, step
                if backend.master:
                    progress.update(step, loss, rate)
    if backend.master:
        progress.close()
    if stopped:
        if backend.master:
            save_state(kid_pt, training_state(backend.params()))
            say(f"stopped by signal {stopped} at step {step}; the state is in {kid_pt}: continue with --resume")
        return 128 + stopped
    if backend.master:
        save_weights(out / "kid.npz", backend.params(), config, tokenizer.chars,
                     meta={"step": step, "backend": backend.name, "precision": backend.precision,
                           "val_loss": log[-1]["val_loss"]})
        say(f"done: val loss {log[-1]['val_loss']:.4f} after {step} steps, "
            f"{log[-1]['elapsed_s']:.0f} s; weights in {out / 'kid.npz'}, state in {kid_pt}")
    return 0


# ------------------------------------------------------------------------------------------------
# the loop's parts: the data, the log, the curve, the progress line, the signals


def prepare_data(args):
    """Load the text, build the vocabulary, split it, and draw the fixed evaluation batches.

    -> Data(tokenizer, config, train_ids, val_ids, evals) where evals maps "train"/"val" to (x, y) batches.
    """
    text = load_text(args.data)
    tokenizer = CharTokenizer.from_text(text)
    config = model_config(args, tokenizer.vocab_size)
    train_ids, val_ids = split_train_val(tokenizer.encode(text), config.block_size)
    evals = {name: eval_batches(ids, n, args.batch_size, config.block_size, args.seed, split=i)
             for i, (name, ids, n) in enumerate((("train", train_ids, args.eval_train_batches),
                                                 ("val", val_ids, args.eval_batches)))}
    return Data(tokenizer, config, train_ids, val_ids, evals)


def write_log(path, entries):
    """log.jsonl: one JSON object per evaluation, the whole file rewritten atomically each time."""
    atomic_write(path, lambda f: f.write("".join(json.dumps(e) + "\n" for e in entries).encode()))


def pyplot(picture, say=print):
    """matplotlib.pyplot, drawing to files, or None where matplotlib is not installed: then one line says
    which picture is left out, once per process."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        if picture not in pyplot.warned:
            say(f"matplotlib is not installed, so no {picture} (pip install matplotlib to get one)")
            pyplot.warned.add(picture)
        return None


pyplot.warned = set()


def plot_losses(entries, path, say=print):
    """loss.png: train and val loss against step. Needs matplotlib (pip install 'tiny-llm[plot]')."""
    plt = pyplot("loss.png", say)
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = [e["step"] for e in entries]
    for split in ("train", "val"):
        ax.plot(steps, [e[f"{split}_loss"] for e in entries], marker="o", label=f"{split} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


class Progress:
    """One status line: step, loss, tokens/s, elapsed and ETA.

    The ETA is the steps left at the mean time of a training step so far, plus the evaluations left
    (every eval_interval steps, and at the last) at the mean time of one so far: the evaluation at
    step 0 does not count as training time. On a terminal the line redraws in place; otherwise (a log
    file, CI) it prints a new line every `every` seconds. say() prints a message above it.
    """

    def __init__(self, total_steps, eval_interval, first_step=0, every=30.0, stream=sys.stderr):
        self.total, self.interval, self.first = total_steps, eval_interval, first_step
        self.stream, self.every = stream, every
        self.tty = stream.isatty()
        self.start = self.last_print = time.perf_counter()
        self.eval_s, self.evals = 0.0, 0
        self.line = ""

    def evaluated(self, seconds):
        """An evaluation took this long."""
        self.eval_s += seconds
        self.evals += 1

    def eta(self, step, now):
        """Seconds left after `step` optimizer steps: the steps left, and the evaluations left, which
        include step's own when it is a multiple of the interval (the loop runs it next)."""
        done = step - self.first
        if not done:
            return float("nan")
        per_step = (now - self.start - self.eval_s) / done
        evals_left = self.total // self.interval - (step - 1) // self.interval + (self.total % self.interval != 0)
        return (self.total - step) * per_step + evals_left * (self.eval_s / self.evals if self.evals else 0.0)

    def update(self, step, loss, tokens_per_s):
        """step: optimizer steps done so far."""
        now = time.perf_counter()
        eta = self.eta(step, now)
        self.line = (f"step {step}/{self.total} | loss {loss:.4f} | {tokens_per_s / 1e3:.1f}k tok/s | "
                     f"{_clock(now - self.start)} elapsed | ETA {_clock(eta)}")
        if self.tty:
            self.stream.write("\r" + self.line + "\033[K")
            self.stream.flush()
        elif now - self.last_print >= self.every or step == self.total:
            print(self.line, file=self.stream, flush=True)
            self.last_print = now

    def say(self, message):
        """Print a message to stdout, above the status line (which lives on stderr, as tqdm's does)."""
        if self.tty and self.line:
            self.stream.write("\r\033[K")
            self.stream.flush()
        print(message, flush=True)
        if self.tty and self.line:
            self.stream.write(self.line)
            self.stream.flush()

    def close(self):
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()


class StopRequest:
    """While active, SIGINT (Ctrl-C) and SIGTERM only set .signum: the training loop checks it each time
    it reads the loss (after every step, or every backend.sync_every steps), writes its checkpoint and
    exits, so a stop never lands in the middle of an update.
    A second signal stops at once (files are written atomically, so none is left half-written)."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


def _clock(seconds):
    if seconds != seconds:     # NaN: nothing measured yet
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
