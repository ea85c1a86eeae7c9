"""Check 4, the payoff: the learner's attention inside the whole kid, trained beside numpy_gpt's own.

Two copies of the kid start from the same weights and take the same steps: the same batches, dropout
masks and learning rates, the kid's AdamW and clipping, in float64. One runs the learner's attention,
the other numpy_gpt's, and their losses are printed next to each other. A third copy, numpy_gpt's kid
carrying the rounding errors two correct attentions may make (numpy_gpt.machinery.rounding.Shadow),
sets how far apart the two losses may drift. The three run side by side, a thread each on one BLAS
thread. Then the learner's kid writes 200 characters.

How the learner's attention gets in: numpy_gpt.model calls attention through the two names it imports,
numpy_gpt.model.attention_forward and attention_backward. plugged_in() points those names at two small
functions that call the attention of the thread that runs them (yours or numpy_gpt's), and puts the
names back on exit. numpy_gpt/model.py itself is not changed. The PyTorch level runs torch_gpt's GPT
with the learner's module in each block, and numpy_gpt's AdamW on its gradients.
"""
import contextlib
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from .. import layers
from .. import model as numpy_model
from ..config import GPTConfig
from ..data import SAMPLE, batch_rng, dropout_seed, get_batch, stream
from ..model import dropout_masks, gpt_backward, gpt_forward, init_params
from ..optim import adamw_init, adamw_step, clip_grad_norm, lr_at
from ..machinery.rounding import LAMBDA, Shadow, loss_tolerance, tolerance
from ..sampling import generate
from .grader import CheckFailed, describe_exception, say
from .plumbing import CharTokenizer, Progress, default_prompt, kid_training_settings, load_text, split_train_val

SAMPLE_CHARS, SAMPLE_TEMPERATURE = 200, 0.8
# The kid's model and training settings, with 8 sequences a step instead of 32, so that the three float64 kids'
# 200 steps take about a minute on 2 cores (docs/exercise.md measures it); a step's cost grows with its
# sequences, so 32 would take about four times as long.
PAYOFF_BATCH = 8
# --small: a model small enough for the tests, trained the same way.
SMALL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4}
# The two kids differ only by the order of float64 operations inside attention: at each step the learner's loss
# may differ from numpy_gpt's by LAMBDA times the distance of the shadow kid's loss from numpy_gpt's, plus one
# forward's rounding of the loss (numpy_gpt.machinery.rounding: the error model, run forward). numpy_gpt's own
# attention gives losses equal bit for bit; a wrong size, scale or mask moves them by far more.

_current = threading.local()        # .attention: the (forward, backward) pair this thread's kid runs


def _forward(qkv, n_head):
    y, cache = _current.attention[0](qkv, n_head)
    # gpt_forward unpacks attention's cache as (q, k, v, att, scale) for its named activations, which the payoff
    # does not read; the attention's own cache rides in the last field, whatever its layout.
    return y, (None, None, None, None, cache)


def _backward(dy, cache):
    return _current.attention[1](dy, cache[4])


@contextlib.contextmanager
def plugged_in():
    """numpy_gpt.model runs the attention of the calling thread (_current.attention) while this is active."""
    saved = numpy_model.attention_forward, numpy_model.attention_backward
    numpy_model.attention_forward, numpy_model.attention_backward = _forward, _backward
    try:
        yield
    finally:
        numpy_model.attention_forward, numpy_model.attention_backward = saved


REFERENCE = (layers.attention_forward, layers.attention_backward)


class NumpyKid:
    """numpy_gpt's kid in float64, running the attention pair (forward, backward) given."""

    def __init__(self, config, settings, attention):
        self.config, self.attention = config, attention
        self.params = init_params(config, seed=settings.seed, dtype=np.float64)
        self.opt = adamw_init(self.params)
        self.shadow = None          # a Shadow: the kid carries the error model's rounding errors
        self.max_logit = None       # the last forward's largest |logit|: the scale of its loss's rounding

    def loss_and_grads(self, x, y, masks):
        _current.attention = self.attention
        logits, loss, cache = gpt_forward(self.params, self.config, x, y, masks=masks)
        self.max_logit = float(np.abs(logits).max())
        grads = gpt_backward(self.params, self.config, cache)
        return float(loss), (self.shadow.gradients(grads) if self.shadow else grads)

    def last_logits(self, ids):
        _current.attention = self.attention
        return gpt_forward(self.params, self.config, np.array([ids]))[0][0, -1]        # (V,)


class TorchKid(NumpyKid):
    """torch_gpt's GPT in float64 with the learner's CausalSelfAttention in every block. The weights and AdamW's
    state live in NumPy, as NumpyKid's; each step copies the weights in and the gradients out."""

    def __init__(self, config, settings, cls):
        import torch

        from torch_gpt.model import GPT
        super().__init__(config, settings, None)
        self.torch = torch
        self.model = GPT(config, seed=settings.seed, dtype=torch.float64)
        for block in self.model.h:
            attn = cls(config).double()
            # torch_gpt's Block calls attn(h, acts, prefix); the learner's forward takes x alone
            attn.forward = (lambda m: lambda x, acts=None, prefix="": type(m).forward(m, x))(attn)
            block.attn = attn
        self.names = dict(self.model.named_parameters())
        if set(self.names) != set(self.params):
            raise CheckFailed(f"the kid with your attention has the parameters "
                              f"{sorted(set(self.names) ^ set(self.params))} where numpy_gpt's has not, or the other "
                              f"way round: keep __init__ as given")

    def load(self):
        with self.torch.no_grad():
            for name, p in self.names.items():
                p.copy_(self.torch.from_numpy(self.params[name]))

    def loss_and_grads(self, x, y, masks):
        torch = self.torch
        self.load()
        self.model.zero_grad(set_to_none=True)
        _, loss = self.model(torch.from_numpy(x), torch.from_numpy(y), masks=[torch.from_numpy(m) for m in masks])
        loss.backward()
        return loss.item(), {name: self.names[name].grad.numpy().copy() for name in self.params}

    def last_logits(self, ids):
        self.load()
        with self.torch.no_grad():
            return self.model(self.torch.tensor([ids]))[0][0, -1].numpy()


def train_step(kid, settings, step, total, x, y, masks):
    """One optimizer step of one kid, as numpy_gpt.train takes it -> the loss before the step."""
    loss, grads = kid.loss_and_grads(x, y, masks)
    grads, _ = clip_grad_norm(grads, settings.grad_clip)
    lr = lr_at(step, settings.lr, settings.min_lr, settings.warmup_steps, total)
    adamw_step(kid.params, grads, kid.opt, lr, (settings.beta1, settings.beta2), weight_decay=settings.weight_decay)
    if kid.shadow:
        kid.shadow.after_step(kid.params)
    return loss


def run_payoff(level, path, steps, small, data):
    """4. The kid (or the small model) trained with the learner's attention beside numpy_gpt's, then a sample.

    level.kind: "numpy-forward", "numpy-backward" or "torch"; level.attention: a NumPy level's pair (forward,
    backward), or the PyTorch level's module class. path: the learner's file, named where it raises.
    """
    settings = kid_training_settings()
    shape = dict(SMALL) if small else dict(n_layer=settings.n_layer, n_head=settings.n_head, n_embd=settings.n_embd,
                                           block_size=settings.block_size, batch_size=PAYOFF_BATCH)
    text = load_text(data)
    tokenizer = CharTokenizer.from_text(text)
    batch = shape.pop("batch_size")
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **shape)
    train_ids, _ = split_train_val(tokenizer.encode(text), config.block_size)
    T = config.block_size
    print(f"4. payoff: {'a small model' if small else 'the kid'} ({config.n_layer} layers, {config.n_head} heads, "
          f"{config.n_embd} wide, {T} characters of context) with your attention, {steps} steps of {batch} sequences "
          f"on {len(text):,} characters of text, float64, beside numpy_gpt's own attention", flush=True)
    calls = None                        # the NumPy levels count the kid's calls of the learner's attention_forward
    if level.kind == "torch":
        yours = TorchKid(config, settings, level.attention)
    else:
        forward, backward = level.attention
        calls = [0]

        def counted(qkv, n_head):
            calls[0] += 1
            return forward(qkv, n_head)
        yours = NumpyKid(config, settings, (counted, backward))
    reference, shadow = NumpyKid(config, settings, REFERENCE), NumpyKid(config, settings, REFERENCE)
    shadow.shadow = Shadow(tol=tolerance(config, batch * config.block_size))    # the bar at this batch's positions

    torch_threads = None
    if level.kind == "torch":
        import torch
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)                    # one core for each kid
    try:
        with plugged_in(), threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(3) as pool:
            train_side_by_side(yours, reference, shadow, pool, calls, config, settings, train_ids, batch, steps, path)
            sample_side_by_side(yours, reference, pool, tokenizer, config, settings)
    finally:
        if torch_threads:
            import torch
            torch.set_num_threads(torch_threads)


def train_side_by_side(yours, reference, shadow, pool, calls, config, settings, train_ids, batch, steps, path):
    """steps steps of the three kids, a thread each; prints the learner's and numpy_gpt's losses every steps/20
    steps, then the verdict: each of the learner's losses within the bar the shadow kid sets."""
    T = config.block_size
    losses, bars = [], []
    every = max(1, steps // 20)
    progress = Progress(steps, steps + 1, every=10.0)
    progress.say(f"{'step':>6}  {'yours':>17}  {'numpy_gpt':>17}  difference")
    start = time.perf_counter()
    for step in range(steps):
        x, y = get_batch(train_ids, batch, T, batch_rng(settings.seed, step))
        masks = dropout_masks(config, batch, T, settings.dropout, np.random.default_rng(
            dropout_seed(settings.seed, step)), np.float64)
        if calls:
            calls[0] = 0
        jobs = [pool.submit(train_step, kid, settings, step, steps, x, y, masks) for kid in (yours, reference, shadow)]
        try:
            *pair, carried = [job.result() for job in jobs]
        except Exception as e:      # the learner's code, on the kid's sizes
            progress.close()
            say("   losses = numpy_gpt's", "FAIL", f"your attention stopped the kid at step {step + 1}")
            raise CheckFailed(describe_exception(e, path, f"your attention, in the kid at step {step + 1},")) from None
        if calls and calls[0] != config.n_layer:       # a step is one forward of every layer
            raise RuntimeError(f"the kid ran your attention_forward {calls[0]} times in a step, not {config.n_layer}: "
                               f"numpy_gpt.model does not call attention through the names plugged_in() replaces; "
                               f"update numpy_gpt/exercise/payoff.py")
        losses.append(pair)
        rounding = loss_tolerance(pair[1], reference.max_logit, tol=shadow.shadow.tol)
        bars.append(LAMBDA * abs(carried - pair[1]) + rounding)
        done = step + 1
        if done == 1 or done % every == 0 or done == steps:
            progress.say(f"{done:>6}  {pair[0]:17.13f}  {pair[1]:17.13f}  {abs(pair[0] - pair[1]):.1e}")
        progress.update(done, pair[0], 2 * batch * T * done / (time.perf_counter() - start))
        if not math.isfinite(pair[0]):
            progress.close()
            say("   losses = numpy_gpt's", "FAIL", f"your kid's loss is {pair[0]} at step {done}")
            raise CheckFailed(f"your kid's loss became {pair[0]} at step {done}, where numpy_gpt's is {pair[1]:.4f}")
    seconds = time.perf_counter() - start
    progress.close()
    yours_losses, ref_losses = np.array(losses).T
    diff = np.abs(yours_losses - ref_losses)
    if (diff > np.array(bars)).any():
        s = int(np.argmax(diff > np.array(bars)))
        say("   losses = numpy_gpt's", "FAIL", f"from step {s + 1}: {yours_losses[s]:.6f} against {ref_losses[s]:.6f}")
        raise CheckFailed("your attention passes the small checks but not on the kid's sizes: look for a size "
                          "written as a number (T, D, n_head) instead of read from the arrays' shapes")
    verdict = ("bit for bit" if not diff.any() else
               f"to float64 rounding: at most {(diff / ref_losses).max():.1e} of the loss, "
               f"{(diff / np.array(bars)).max():.0e} of what rounding allows")
    say("   losses = numpy_gpt's", "ok", f"{steps} steps in {seconds:.0f} s, equal {verdict}; "
        f"loss {yours_losses[0]:.4f} -> {yours_losses[-1]:.4f}")


def sample(kid, tokenizer, prompt, config, settings, out=None):
    """SAMPLE_CHARS characters after prompt, each from a whole forward of the kid over the window (no KV cache:
    numpy_gpt's cached decoding has attention of its own), written to out as they come -> the text."""
    written = []
    for token, _ in generate(lambda ids: kid.last_logits(ids), None, tokenizer.encode(prompt), SAMPLE_CHARS,
                             config.block_size, stream(settings.seed, SAMPLE), SAMPLE_TEMPERATURE, use_cache=False):
        written.append(tokenizer.chars[token])
        if out:
            out.write(written[-1])
            out.flush()
    return "".join(written)


def sample_side_by_side(yours, reference, pool, tokenizer, config, settings):
    """Your kid writes its sample on the screen while numpy_gpt's writes its own in the other thread."""
    prompt = default_prompt(tokenizer.chars)
    print(f"   a sample from your kid ({SAMPLE_CHARS} characters, temperature {SAMPLE_TEMPERATURE}):\n", flush=True)
    theirs = pool.submit(sample, reference, tokenizer, prompt, config, settings)
    sys.stdout.write(prompt)
    texts = [pool.submit(sample, yours, tokenizer, prompt, config, settings, sys.stdout).result(), theirs.result()]
    print("\n", flush=True)
    first = next((n for n, (a, b) in enumerate(zip(*texts)) if a != b), None)
    say("   sample = numpy_gpt's", "ok" if first is None else "note",
        "numpy_gpt's own attention writes the same characters" if first is None else
        f"numpy_gpt's own attention writes another character from character {first + 1} on (a draw that lands "
        f"within float64 rounding of a cumulative-probability edge)")
