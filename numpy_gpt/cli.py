"""What the command lines of both backends share: flags, their checks, the progress line, errors."""
import argparse
import os
import signal
import sys
import time

from .config import GPTConfig, UserError
from .sampling import generate


def run_cli(main):
    """Run a command's main(); a UserError becomes one line on stderr and exit status 1."""
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:                     # e.g. `python -m numpy_gpt.sample | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


# ------------------------------------------------------------------------------------------------
# training


def training_parser(prog, description):
    """The flags both trainers share. Defaults train the kid: the model is GPTConfig's defaults."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    kid = GPTConfig()
    g = p.add_argument_group("run")
    g.add_argument("--steps", type=int, default=5000, help="optimizer steps in the whole run")
    g.add_argument("--batch-size", type=int, default=32, help="sequences per optimizer step (per process)")
    g.add_argument("--seed", type=int, default=1337, help="seeds the init, the batches and the samples")
    g.add_argument("--data", default=None,
                   help="a UTF-8 text file to train on (default: tinyshakespeare at data/tinyshakespeare.txt, "
                        "downloaded and checked if missing)")
    g.add_argument("--out", default="out", help="folder for kid.npz, log.jsonl and snapshots")
    g.add_argument("--eval-interval", type=int, default=500, help="evaluate, sample and snapshot every N steps")
    g.add_argument("--eval-batches", type=int, default=100,
                   help="fixed val batches (of --batch-size full-length sequences) per val loss estimate")
    g.add_argument("--eval-train-batches", type=int, default=20,
                   help="fixed train-split batches per train loss estimate (it only draws the curve)")
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    g = p.add_argument_group("optimizer: AdamW, linear warmup then cosine decay, global-norm clipping")
    g.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    g.add_argument("--min-lr", type=float, default=None, help="final learning rate (default: lr / 100)")
    g.add_argument("--warmup-steps", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.1, help="on 2-D weights only")
    g.add_argument("--beta1", type=float, default=0.9)
    g.add_argument("--beta2", type=float, default=0.99)
    g.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm; 0 turns it off")
    g.add_argument("--dropout", type=float, default=0.1,
                   help="probability of dropping each entry of a residual branch, in training")
    g = p.add_argument_group("model (defaults: the kid)")
    g.add_argument("--n-layer", type=int, default=kid.n_layer)
    g.add_argument("--n-head", type=int, default=kid.n_head)
    g.add_argument("--n-embd", type=int, default=kid.n_embd)
    g.add_argument("--block-size", type=int, default=kid.block_size)
    return p


def check_training_args(args):
    """Impossible settings, found before any work is done. Fills in --min-lr."""
    for flag in ("steps", "batch_size", "eval_interval", "eval_batches", "eval_train_batches"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.warmup_steps < 0:
        raise UserError(f"--warmup-steps must be 0 or more, got {args.warmup_steps}")
    if args.min_lr is None:
        args.min_lr = args.lr / 100
    if not args.lr > 0 or not args.min_lr >= 0:
        raise UserError(f"--lr must be positive and --min-lr zero or more, got {args.lr} and {args.min_lr}")
    if not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1):
        raise UserError(f"--beta1 and --beta2 must be in [0, 1), got {args.beta1} and {args.beta2}")
    if args.weight_decay < 0 or args.grad_clip < 0:
        raise UserError("--weight-decay and --grad-clip must be 0 or more")
    if not 0 <= args.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    return args


def keep_freed_memory():
    """Ask glibc to keep freed memory for the next allocation instead of handing it back to the OS.

    A training step frees and re-allocates the same large arrays every step. By default glibc returns
    big blocks to the OS at once (mmap/munmap) and the next step page-faults them back in: 45,000
    faults a step for numpy_gpt's kid, about 20% of its step time. The same as setting
    MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_. Does nothing where there is no glibc.
    """
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)          # blocks up to 32 MiB come from the heap...
    libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)     # ...and the heap is not trimmed


def model_config(args, vocab_size):
    return GPTConfig(vocab_size=vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                     n_head=args.n_head, n_embd=args.n_embd)


class Progress:
    """One status line: step, loss, tokens/s, elapsed and ETA.

    On a terminal it redraws in place; otherwise (a log file, CI) it prints a new line every
    `every` seconds. say() prints a message above it.
    """

    def __init__(self, total_steps, first_step=0, every=30.0, stream=sys.stderr):
        self.total, self.first = total_steps, first_step
        self.stream, self.every = stream, every
        self.tty = stream.isatty()
        self.start = self.last_print = time.perf_counter()
        self.line = ""

    def update(self, step, loss, tokens_per_s):
        """step: optimizer steps done so far."""
        now = time.perf_counter()
        done = step - self.first
        eta = (self.total - step) * (now - self.start) / done if done else float("nan")
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
    """While active, SIGINT (Ctrl-C) and SIGTERM only set .signum: the training loop checks it after each
    step, writes its checkpoint and exits, so a stop never lands in the middle of an update.
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


# ------------------------------------------------------------------------------------------------
# sampling


def sampling_parser(prog, description, default_checkpoint="out/kid.npz"):
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=default_checkpoint, help="weights to sample from")
    p.add_argument("--prompt", default=None, help="text to continue (empty: start from a newline)")
    p.add_argument("--prompt-file", default=None, help="read the prompt from this UTF-8 file")
    p.add_argument("--max-new-tokens", type=int, default=500, help="characters to generate per sample")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None,
                   help="keep the k most likely characters (1..vocab size; larger is refused)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus: keep the most likely characters "
                                                            "whose probability adds up to top-p, in (0, 1]")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--num-samples", type=int, default=1)
    return p


def check_sampling_args(args):
    """Settings that are wrong whatever the model. The vocabulary-dependent checks are in prompt_ids."""
    if not args.temperature >= 0:
        raise UserError(f"--temperature must be 0 (greedy) or more, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens must be 0 or more, got {args.max_new_tokens}")
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.prompt is not None and args.prompt_file is not None:
        raise UserError("give --prompt or --prompt-file, not both")
    return args


def read_prompt(args):
    if args.prompt_file is None:
        return args.prompt or ""
    try:
        with open(args.prompt_file, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"prompt file not found: {args.prompt_file}") from None
    except UnicodeDecodeError:
        raise UserError(f"prompt file {args.prompt_file} is not UTF-8 text") from None


def prompt_ids(prompt, tokenizer, top_k):
    """Encode the prompt (an empty one starts from a newline) and check top_k against the vocabulary."""
    if top_k is not None and top_k > tokenizer.vocab_size:
        raise UserError(f"--top-k {top_k} is larger than the vocabulary ({tokenizer.vocab_size} characters); "
                        f"it is refused, not clamped: use 1..{tokenizer.vocab_size} or leave it out")
    if prompt == "":
        if "\n" not in tokenizer.stoi:
            raise UserError("an empty prompt starts from a newline, which this vocabulary lacks; pass --prompt")
        prompt = "\n"
    try:
        return tokenizer.encode(prompt)
    except UserError as e:
        raise UserError(f"the prompt has {e}") from None


def stream_samples(args, prefill, decode, tokenizer, block_size, rng, out=sys.stdout):
    """Print --num-samples samples, each the prompt then its continuation, one character at a time."""
    prompt = read_prompt(args)
    ids = prompt_ids(prompt, tokenizer, args.top_k)
    for i in range(args.num_samples):
        if i:
            out.write("\n\n---------------\n\n")
        out.write(prompt)
        out.flush()
        for token, _ in generate(prefill, decode, ids, args.max_new_tokens, block_size, rng,
                                 args.temperature, args.top_k, args.top_p):
            out.write(tokenizer.chars[token])
            out.flush()
    out.write("\n")
    out.flush()


# ------------------------------------------------------------------------------------------------
# what both trainers do around the training itself


def prepare_data(args):
    """Load the text, build the vocabulary, split it, and draw the fixed evaluation batches.

    -> (tokenizer, config, train_ids, val_ids, evals) where evals maps "train"/"val" to (x, y) batches.
    """
    from .data import CharTokenizer, eval_batches, load_text, split_train_val
    text = load_text(args.data)
    tokenizer = CharTokenizer.from_text(text)
    config = model_config(args, tokenizer.vocab_size)
    train_ids, val_ids = split_train_val(tokenizer.encode(text), config.block_size)
    evals = {name: eval_batches(ids, n, args.batch_size, config.block_size, args.seed + i)
             for i, (name, ids, n) in enumerate((("train", train_ids, args.eval_train_batches),
                                                 ("val", val_ids, args.eval_batches)))}
    return tokenizer, config, train_ids, val_ids, evals


def write_log(path, entries):
    """log.jsonl: one JSON object per evaluation, the whole file rewritten atomically each time."""
    import json
    from .checkpoint import atomic_write
    atomic_write(path, lambda f: f.write("".join(json.dumps(e) + "\n" for e in entries).encode()))


def plot_losses(entries, path, say=print):
    """loss.png: train and val loss against step. Needs matplotlib (pip install 'tiny-llm[plot]')."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not plot_losses.warned:
            say("matplotlib is not installed, so no loss.png (pip install matplotlib to get one)")
            plot_losses.warned = True
        return
    from .checkpoint import atomic_write
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


plot_losses.warned = False
