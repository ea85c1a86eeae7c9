"""What the command lines of every command share: the parser, flags and their checks, the sampling flags, errors."""
import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

from ..config import GPTConfig
from ..sampling import generate_batch
from .corpus import DEFAULT_PROMPT
from .errors import UserError, open_input

SEED_MAX = 2 ** 32 - 1


def run_cli(main):
    """Run a command's main(); a UserError becomes one line on stderr and exit status 1.

    So do, as a last resort, a file that cannot be read or written (OSError: a full disk, say) and
    memory that runs out: the user can act on those, and a traceback would not help them.
    """
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
    except OSError as e:
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print("error: out of memory; choose smaller sizes or batches, or free some memory", file=sys.stderr)
        sys.exit(1)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a command line it cannot parse is one line too, `error: ...`, with
    argparse's exit status 2, in place of a usage block. A subcommand's parser is of this class too."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default after its help, unless the help already says what the default is."""

    def _get_help_string(self, action):
        return action.help if "(default" in (action.help or "") else super()._get_help_string(action)


def finite_float(text):
    """The type of every float flag: float() takes "nan" and "inf", which no setting means."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def check_seed(seed):
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"--seed must be in 0..{SEED_MAX}, got {seed}")


def check_at_least(args, minimum, *flags):
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value < minimum:
            raise UserError(f"{flag} must be at least {minimum}, got {value}")


def check_output(path, flag, folder):
    """Refuse an output path before any work: a file where a folder belongs (folder=True) or a folder
    where a file does, or a place this user cannot write in. Writes can still fail later (a full disk)."""
    path = Path(path)
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file; pass a folder (new or existing)")
    if not folder and os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder; pass a file name")
    parent = path if folder else path.parent
    while not os.path.exists(parent):            # the nearest part of the path that exists
        parent = parent.parent
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path}: {parent} is a file, so nothing can be written inside it")
    try:                                         # the one sure test: make something there, then remove it
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".tiny-llm-check."))
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write in {parent} ({e.strerror}); pass a place you may write to") \
            from None


def machine_memory():
    """This machine's memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(n_layer, n_embd, block_size, batch_size, n_batches, itemsize, fix):
    """Refuse, before anything is allocated, sizes whose weights and token batches alone exceed this
    machine's memory. A lower bound: the embedding, the head, activations, gradients and AdamW's state
    come on top, so settings that pass may still not fit, but none that fit is refused."""
    total = machine_memory()
    if total is None:
        return
    weights = (12 * n_layer * n_embd ** 2 + block_size * n_embd) * itemsize   # the blocks' matmuls and wpe
    batches = n_batches * batch_size * (block_size + 1) * 8                   # int64 token windows
    if weights + batches > total:
        raise UserError(f"these settings need {(weights + batches) / 2 ** 30:.3g} GiB for the weights and token "
                        f"batches alone, more than this machine's {total / 2 ** 30:.0f} GiB of memory; {fix}")


# ------------------------------------------------------------------------------------------------
# training


# the run's length and what it measures: a --resume that leaves one out goes on with the run's own (kid.pt's
# "run"); --sample-prompt too, whose default depends on the text
RUN_DEFAULTS = {"steps": 5000, "eval_interval": 500, "eval_batches": 50, "eval_train_batches": 20}
RUN_FLAGS = (*RUN_DEFAULTS, "sample_prompt")


def training_parser(prog, description):
    """The flags of both trainers (numpy_gpt.machinery.loop runs them both). Defaults train the kid: the model is
    GPTConfig's defaults."""
    p = ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    kid = GPTConfig()
    g = p.add_argument_group("run (--resume takes --steps, --eval-* and --sample-prompt from the run where left out)")
    g.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps in the whole run (default: {RUN_DEFAULTS['steps']})")
    g.add_argument("--batch-size", type=int, default=32,
                   help="sequences per micro-batch; an optimizer step takes --grad-accum micro-batches in each "
                        "process")
    g.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches of --batch-size per optimizer step and process")
    g.add_argument("--seed", type=int, default=1337,
                   help=f"seeds the init, the batches, the dropout masks and the samples (0..{SEED_MAX})")
    g.add_argument("--data", default=None,
                   help="a UTF-8 text file to train on (default: tinyshakespeare at data/tinyshakespeare.txt, "
                        "downloaded and checked if missing)")
    g.add_argument("--out", default="out",
                   help="folder for log.jsonl, loss.png, checkpoints/ (weights snapshots), kid.pt (the training "
                        "state, for --resume by either trainer) and, at the end, kid.npz")
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in OUT/kid.pt, whichever trainer wrote it")
    g.add_argument("--eval-interval", type=int, default=None,
                   help="every N steps: estimate the train and val loss, sample from --sample-prompt (into "
                        f"log.jsonl), snapshot the weights into checkpoints/ and save kid.pt (default: "
                        f"{RUN_DEFAULTS['eval_interval']})")
    g.add_argument("--eval-batches", type=int, default=None,
                   help="fixed val batches (of --batch-size full-length sequences) per val loss estimate "
                        f"(default: {RUN_DEFAULTS['eval_batches']})")
    g.add_argument("--eval-train-batches", type=int, default=None,
                   help="fixed train-split batches per train loss estimate (it only draws the curve) "
                        f"(default: {RUN_DEFAULTS['eval_train_batches']})")
    g.add_argument("--sample-prompt", default=None,
                   help=f"the text each evaluation's sample continues; every character must be in the text "
                        f"(default: {DEFAULT_PROMPT} where the text has its characters, else the first 8 of the "
                        f"text's distinct characters, sorted, that are not white space)")
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="the weights' and the arithmetic's precision: float32 trains; float64 is for exact checks "
                        "(parity, the tests), at several times the time")
    g = p.add_argument_group("optimizer: AdamW, linear warmup then cosine decay, global-norm clipping")
    g.add_argument("--lr", type=finite_float, default=3e-3, help="peak learning rate")
    g.add_argument("--min-lr", type=finite_float, default=None,
                   help="final learning rate, at most --lr (default: lr / 100)")
    g.add_argument("--warmup-steps", type=int, default=100,
                   help="steps of linear warmup from lr / warmup-steps up to --lr, before the cosine decay")
    g.add_argument("--weight-decay", type=finite_float, default=0.1, help="on 2-D weights only")
    g.add_argument("--beta1", type=finite_float, default=0.9,
                   help="AdamW's decay of its moving mean of the gradient, in [0, 1)")
    g.add_argument("--beta2", type=finite_float, default=0.99,
                   help="AdamW's decay of its moving mean of the squared gradient, in [0, 1)")
    g.add_argument("--grad-clip", type=finite_float, default=1.0, help="max global gradient norm; 0 turns it off")
    g.add_argument("--dropout", type=finite_float, default=0.1,
                   help="probability of dropping each entry of a residual branch, in training")
    g = p.add_argument_group("model (defaults: the kid)")
    g.add_argument("--n-layer", type=int, default=kid.n_layer, help="transformer blocks")
    g.add_argument("--n-head", type=int, default=kid.n_head, help="attention heads per block; must divide --n-embd")
    g.add_argument("--n-embd", type=int, default=kid.n_embd, help="width of the residual stream (channels)")
    g.add_argument("--block-size", type=int, default=kid.block_size, help="characters of context")
    return p


def check_training_args(args):
    """Impossible settings, found before any work is done (the data is not read yet). Fills in --min-lr and
    the RUN_DEFAULTS, and lists those left out in args.unset (with sample_prompt, when left out)."""
    args.unset = [k for k in RUN_FLAGS if getattr(args, k) is None]
    for k in args.unset:
        setattr(args, k, RUN_DEFAULTS.get(k))
    check_at_least(args, 1, "--steps", "--batch-size", "--eval-interval", "--eval-batches", "--eval-train-batches",
                   "--n-layer", "--n-head", "--n-embd", "--block-size", "--grad-accum")
    if args.warmup_steps < 0:
        raise UserError(f"--warmup-steps must be 0 or more, got {args.warmup_steps}")
    check_seed(args.seed)
    if args.min_lr is None:
        args.min_lr = args.lr / 100
    if not args.lr > 0 or not args.min_lr >= 0:
        raise UserError(f"--lr must be positive and --min-lr zero or more, got {args.lr} and {args.min_lr}")
    if args.min_lr > args.lr:
        raise UserError(f"--min-lr ({args.min_lr}) is above --lr ({args.lr}); the rate decays from --lr down to "
                        f"--min-lr, so pass a --min-lr of at most --lr")
    if not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1):
        raise UserError(f"--beta1 and --beta2 must be in [0, 1), got {args.beta1} and {args.beta2}")
    if args.weight_decay < 0 or args.grad_clip < 0:
        raise UserError("--weight-decay and --grad-clip must be 0 or more")
    if not 0 <= args.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    model_config(args, vocab_size=1)        # n_embd divisible by n_head; the vocabulary comes with the data
    check_memory(args.n_layer, args.n_embd, args.block_size, args.batch_size,
                 args.eval_batches + args.eval_train_batches + args.grad_accum,
                 4 if args.dtype == "float32" else 8,
                 "lower --n-layer, --n-embd, --block-size, --batch-size, --eval-batches or --eval-train-batches")
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


# ------------------------------------------------------------------------------------------------
# sampling


def sampling_parser(prog, description, default_checkpoint="out/kid.npz"):
    p = ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=default_checkpoint, help="weights to sample from")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="compute the logits in this precision. float64: the two backends print the same "
                        "text; float32: the same unless a draw lands within float32 rounding of a "
                        "cumulative-probability edge (numpy_gpt/sampling.py)")
    p.add_argument("--prompt", default=None, help="text to continue (empty: start from a newline)")
    p.add_argument("--prompt-file", default=None, help="read the prompt from this UTF-8 file")
    p.add_argument("--max-new-tokens", type=int, default=500, help="characters to generate per sample")
    p.add_argument("--temperature", type=finite_float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None,
                   help="keep the k most likely characters (1..vocab size; larger is refused)")
    p.add_argument("--top-p", type=finite_float, default=1.0,
                   help="nucleus: keep the most likely characters whose probability adds up to top-p, in (0, 1]")
    p.add_argument("--seed", type=int, default=1337, help=f"seeds the samples (0..{SEED_MAX})")
    p.add_argument("--num-samples", type=int, default=1,
                   help="samples to write, computed 32 at a time as one batch; each takes the random numbers "
                        "after the previous one's, so the first is the text of --num-samples 1")
    return p


def check_sampling_args(args):
    """Settings that are wrong whatever the model, and the prompt file read into args.prompt, all before
    the model is loaded. The vocabulary-dependent checks are in prompt_ids."""
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
    need = 16 * min(SAMPLE_BATCH, args.num_samples) * args.max_new_tokens    # a batch's text and random numbers
    if machine_memory() is not None and need > machine_memory():
        raise UserError(f"--max-new-tokens {args.max_new_tokens} needs {need / 2 ** 30:.3g} GiB for the text "
                        f"alone, more than this machine's memory; ask for fewer characters")
    check_seed(args.seed)
    if args.prompt is not None and args.prompt_file is not None:
        raise UserError("give --prompt or --prompt-file, not both")
    args.prompt = read_prompt(args)
    return args


def read_prompt(args):
    if args.prompt_file is None:
        return args.prompt or ""
    with open_input(args.prompt_file, "prompt file", "pass an existing UTF-8 file, or --prompt TEXT") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
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


SAMPLE_BATCH = 32          # --num-samples are drawn this many at a time, as one batch


def stream_samples(args, sampler, tokenizer, block_size, rng, out=None):
    """Print --num-samples samples, each the prompt (args.prompt, see check_sampling_args) then its
    continuation. sampler(n) -> (prefill, decode) for n samples at once over a fresh KV cache
    (numpy_gpt.sampling.generate_batch). The samples are drawn SAMPLE_BATCH at a time; the first of
    each batch streams as it is written, and the rest of the batch, written alongside, follows it."""
    out = out or sys.stdout             # looked up now: a test may have replaced it
    prompt = args.prompt
    ids = prompt_ids(prompt, tokenizer, args.top_k)
    for first in range(0, args.num_samples, SAMPLE_BATCH):
        n = min(SAMPLE_BATCH, args.num_samples - first)
        rest = [[] for _ in range(n - 1)]
        if first:
            out.write("\n\n---------------\n\n")
        out.write(prompt)
        out.flush()
        for tokens, _ in generate_batch(*sampler(n), ids, n, args.max_new_tokens, block_size, rng,
                                        args.temperature, args.top_k, args.top_p):
            out.write(tokenizer.chars[tokens[0]])
            out.flush()
            for text, token in zip(rest, tokens[1:]):
                text.append(tokenizer.chars[token])
        for text in rest:
            out.write("\n\n---------------\n\n" + prompt + "".join(text))
    out.write("\n")
    out.flush()
