"""One set of weights in numpy_gpt and torch_gpt: every activation, gradient and optimizer update compared.

Shape key: B batch, T time, C channels, H heads, D head size, V vocab.

The measure, per tensor: max |a - b| / max(max |b|, FLOOR), with a the NumPy value and b torch's.
That is the largest difference relative to the tensor's own scale (its largest entry). The absolute
FLOOR only matters for a tensor that is zero or nearly zero everywhere.
Relative to the largest entry rather than to each entry, because an entry that is tiny by
cancellation (a gradient summed from terms of opposite sign) carries an absolute rounding error of
the size of its terms, not of itself: elementwise, it would look wrong however right it is.
"""
import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import numpy_gpt.model
from numpy_gpt import GPTConfig, gpt_backward, gpt_forward, init_params
from numpy_gpt.machinery.checkpoint import load_weights
from numpy_gpt.data import dropout_seed
from numpy_gpt.model import dropout_masks
from numpy_gpt.machinery.cli import check_training_args
from numpy_gpt.optim import adamw_init, adamw_step, clip_grad_norm, lr_at
from numpy_gpt.machinery.rounding import (FLOOR, LAMBDA, TOLERANCE, UPDATE_ROUNDINGS, Shadow, loss_tolerance,
                                         run_tolerance)
from torch_gpt.model import GPT
from torch_gpt import train as trainer      # its optimizer and step, called as the trainer calls them

DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}
# AdamW, clipping and schedule: torch_gpt's trainer's own defaults (its parser, as `python -m
# torch_gpt.train` with no flags); its optimizer and step are called below, not restated.
DEFAULTS = check_training_args(trainer.parser().parse_args([]))
CPU = torch.device("cpu")


def schedule(total_steps):
    """The trainers' learning rate as a function of the step, for a run of total_steps: their warmup
    (or a fifth of the run, if that is shorter) then the cosine."""
    warmup = min(DEFAULTS.warmup_steps, total_steps // 5)
    return lambda step: lr_at(step, DEFAULTS.lr, DEFAULTS.min_lr, warmup, total_steps)


@dataclass
class Row:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    tol: float

    @property
    def ok(self):
        return bool(self.max_rel <= self.tol)     # NaN fails

    @property
    def margin(self):
        """max_rel / tol: at most 1 where the row passes (a bar of 0 passes only an exact match)."""
        if self.tol > 0:
            return self.max_rel / self.tol
        return 0.0 if self.max_rel == 0 else math.inf


def compare(name, a, b, tol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return Row(name, a.shape, float("inf"), float("inf"), tol)
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    scale = max(float(np.abs(b).max()) if b.size else 0.0, FLOOR)
    return Row(name, a.shape, diff, diff / scale, tol)


def compare_dicts(prefix, a, b, tol):
    """Rows for every name in either dict: a name only one backend produced is a failure."""
    rows = []
    for name in list(a) + [n for n in b if n not in a]:
        if name in a and name in b:
            rows.append(compare(prefix + name, a[name], b[name], tol))
        else:
            rows.append(Row(prefix + name + (" (missing in torch)" if name in a else " (missing in numpy)"),
                            np.shape(a.get(name, b.get(name))), float("inf"), float("inf"), tol))
    return rows


def compare_updates(prefix, p0, a, b, tol):
    """Rows for one optimizer step: numpy's update a - p0 against torch's b - p0, on the update's scale.

    Not the parameters themselves: at the first step's lr the update is ~3e-5 of a parameter of 1, so
    on the parameters' scale a 30% error in it, or weight decay missing, would be below float32's
    tolerance. The tolerance of each tensor adds UPDATE_ROUNDINGS roundings at its parameters' scale.
    """
    rows = []
    for name in p0:
        base = np.asarray(p0[name], dtype=np.float64)
        da, db = np.asarray(a[name], dtype=np.float64) - base, np.asarray(b[name], dtype=np.float64) - base
        unit = np.finfo(p0[name].dtype).eps / 2
        scale = max(float(np.abs(db).max()), FLOOR)
        allowance = UPDATE_ROUNDINGS * unit * max(float(np.abs(base).max()), float(np.abs(b[name]).max())) / scale
        rows.append(compare(prefix + name, da, db, tol + allowance))
    return rows


def load_params(checkpoint, seed, dtype, config=None):
    """-> (params, config): a weights file cast to dtype, or a seeded GPT-2 init of config (the kid by default)."""
    if checkpoint:
        params, config, _, _ = load_weights(checkpoint)
        return {k: v.astype(dtype) for k, v in params.items()}, config
    config = config or GPTConfig()
    return init_params(config, seed, dtype), config


def make_batch(config, seed, batch_size=4, T=None):
    """(x, y) of shape (B, T), the same for both backends: a stand-in for text that can be learned.

    Each sequence is a random walk in which every token has three possible successors, fixed for all
    batches, so a training trajectory has something to learn (its loss falls from ln V towards ln 3).
    """
    T = T or config.block_size
    successors = np.random.default_rng(0x5EED).integers(0, config.vocab_size, (config.vocab_size, 3))   # (V, 3)
    rng = np.random.default_rng([seed, 0xBA7C])
    ids = np.empty((batch_size, T + 1), dtype=np.int64)
    ids[:, 0] = rng.integers(0, config.vocab_size, batch_size)
    pick = rng.integers(0, 3, (batch_size, T))
    for t in range(T):
        ids[:, t + 1] = successors[ids[:, t], pick[:, t]]
    return ids[:, :-1], ids[:, 1:]


def torch_model(params, config, torch_dtype):
    model = GPT(config, dtype=torch_dtype)
    model.load_numpy(params)
    return model


# ------------------------------------------------------------------------------------------------
# the named activations, watched from outside the models
#
# Both models only compute. numpy_gpt's activations are the outputs of the layer functions gpt_forward
# calls, recorded as it calls them (watch_layers: NumPy's counterpart of torch's forward hooks), and
# attention's q, k, v and att are in the cache its backward keeps. torch_gpt's come from forward hooks
# on its modules, and att from its written-out softmax (the `fast = False` path).

# the layer functions gpt_forward calls for one block, in order, each with the name of its output
# (None: not compared; c_attn's output is q, k and v side by side, a dropout's is its branch masked)
BLOCK_CALLS = [("layernorm_forward", "ln_1"), ("linear_forward", None), ("attention_forward", "attn.y"),
               ("linear_forward", "attn.c_proj"), ("dropout_forward", None), ("residual_forward", "res_attn"),
               ("layernorm_forward", "ln_2"), ("linear_forward", "mlp.c_fc"), ("gelu_forward", "mlp.gelu"),
               ("linear_forward", "mlp.c_proj"), ("dropout_forward", None), ("residual_forward", "res_mlp")]


def forward_calls(config, with_loss):
    """[(layer function, activation name or None)] of one gpt_forward, in the order it calls them."""
    calls = [("embedding_forward", "embed")]
    for l in range(config.n_layer):
        calls += [(f, name and f"h.{l}.{name}") for f, name in BLOCK_CALLS]
    calls += [("layernorm_forward", "ln_f"), ("linear_forward", "logits")]
    return calls + [("cross_entropy_forward", "loss")] * with_loss


@contextlib.contextmanager
def watch_layers(module=numpy_gpt.model):
    """While active, every layer function the module calls (its *_forward globals) appends (function
    name, output) to the list this yields. The functions run unchanged; only their results are kept."""
    seen, originals = [], {n: f for n, f in vars(module).items()
                           if n.endswith("_forward") and n != "gpt_forward" and callable(f)}

    def watched(name, f):
        def call(*args, **kwargs):
            out = f(*args, **kwargs)
            seen.append((name, out))
            return out
        return call
    for name, f in originals.items():
        setattr(module, name, watched(name, f))
    try:
        yield seen
    finally:
        for name, f in originals.items():
            setattr(module, name, f)


def numpy_forward_backward(params, config, x, y):
    """-> (acts, grads) from numpy_gpt: every named activation, and every parameter's gradient."""
    with watch_layers() as seen:
        _, _, cache = gpt_forward(params, config, x, y)
    calls = forward_calls(config, with_loss=True)
    if [f for f, _ in calls] != [f for f, _ in seen]:
        raise RuntimeError(f"gpt_forward called {[f for f, _ in seen]}, not the layers parity names "
                           f"{[f for f, _ in calls]}; update parity.compare.BLOCK_CALLS")
    acts = {name: out for (_, name), (_, (out, _)) in zip(calls, seen) if name}
    for l in range(config.n_layer):
        q, k, v, att, _ = cache[f"h.{l}.attn"]              # what attention's backward keeps
        acts.update({f"h.{l}.attn.q": q, f"h.{l}.attn.k": k, f"h.{l}.attn.v": v, f"h.{l}.attn.att": att})
    return acts, gpt_backward(params, config, cache)


class SoftmaxCalls(TorchFunctionMode):
    """While active, the output of every F.softmax call, in order, in .outputs."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.softmax:
            self.outputs.append(out)
        return out


@contextlib.contextmanager
def torch_activations(model):
    """While active, model's forward (run with its written-out attention) fills the dict this yields
    with every named activation, by forward hooks on its modules: a module's output, or the input of
    the module after it where the tensor is no module's output (the residual stream, attention's y)."""
    acts, hooks = {}, []
    H = model.config.n_head

    def output(name):
        return lambda module, args, out: acts.__setitem__(name, out)

    def input_(name):
        return lambda module, args: acts.__setitem__(name, args[0])

    def heads(prefix):
        def hook(module, args, qkv):                        # c_attn's output (B, T, 3C): q, k, v side by side
            B, T, C3 = qkv.shape
            for name, t in zip("qkv", qkv.split(C3 // 3, dim=2)):
                acts[prefix + name] = t.view(B, T, H, C3 // 3 // H).transpose(1, 2)     # (B, H, T, D)
        return hook
    hooks.append(model.h[0].register_forward_pre_hook(input_("embed")))
    for l, block in enumerate(model.h):
        p = f"h.{l}."
        hooks += [block.ln_1.register_forward_hook(output(p + "ln_1")),
                  block.attn.c_attn.register_forward_hook(heads(p + "attn.")),
                  block.attn.c_proj.register_forward_pre_hook(input_(p + "attn.y")),
                  block.attn.c_proj.register_forward_hook(output(p + "attn.c_proj")),
                  block.ln_2.register_forward_pre_hook(input_(p + "res_attn")),
                  block.ln_2.register_forward_hook(output(p + "ln_2")),
                  block.mlp.c_fc.register_forward_hook(output(p + "mlp.c_fc")),
                  block.mlp.c_proj.register_forward_pre_hook(input_(p + "mlp.gelu")),
                  block.mlp.c_proj.register_forward_hook(output(p + "mlp.c_proj")),
                  block.register_forward_hook(output(p + "res_mlp"))]
    hooks += [model.ln_f.register_forward_hook(output("ln_f")), model.lm_head.register_forward_hook(output("logits"))]
    attentions = [block.attn for block in model.h]
    fast = [a.fast for a in attentions]
    try:
        for a in attentions:
            a.fast = False
        with SoftmaxCalls() as softmax:
            yield acts
        for l, att in enumerate(softmax.outputs):
            acts[f"h.{l}.attn.att"] = att
    finally:
        for a, f in zip(attentions, fast):
            a.fast = f
        for h in hooks:
            h.remove()


def torch_forward_backward(model, x, y):
    """-> (acts, grads, fast_grads) from torch_gpt, as NumPy arrays.

    acts and grads come from the written-out attention, fast_grads from the path training uses, with
    F.scaled_dot_product_attention.
    """
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model.zero_grad(set_to_none=True)
    with torch_activations(model) as acts:
        _, loss = model(x, y)
    acts["loss"] = loss
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model(x, y)[1].backward()
    fast_grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return {k: v.detach().numpy() for k, v in acts.items()}, grads, fast_grads


@dataclass
class Run:
    losses: list        # each step's batch loss
    params: dict        # the parameters after the last step
    norms: list = None  # each step's gradient norm before clipping (numpy_gpt's run)
    logits: list = None  # each step's largest |logit| (numpy_gpt's run): the scale of the loss's own rounding


def numpy_run(params, config, batches, lr_of_step, dropout=0.0, seed=0, shadow=None):
    """numpy_gpt's run of len(batches) steps from params, as numpy_gpt.train steps (train_both says what a
    step is); with shadow (a Shadow), the same run carrying the error model's errors -> Run."""
    params = {k: v.copy() for k, v in params.items()}
    state = adamw_init(params)
    run = Run([], params, [], [])
    for step, (x, y) in enumerate(batches):
        rng = np.random.default_rng(dropout_seed(seed, step))
        logits, loss, cache = gpt_forward(params, config, x, y, dropout, rng)
        grads = gpt_backward(params, config, cache)
        if shadow:
            grads = shadow.gradients(grads)
        grads, norm = clip_grad_norm(grads, DEFAULTS.grad_clip)
        adamw_step(params, grads, state, lr_of_step(step), (DEFAULTS.beta1, DEFAULTS.beta2),
                   weight_decay=DEFAULTS.weight_decay)
        if shadow:
            shadow.after_step(params)
        run.losses.append(float(loss))
        run.norms.append(norm)
        run.logits.append(float(np.abs(logits).max()))
    return run


def train_both(params, config, batches, lr_of_step, torch_dtype, dropout=0.0, seed=0):
    """Run len(batches) steps of the full update in both backends from the same params.

    Each step: forward with dropout (both backends draw the same masks, from one seeded NumPy stream
    per step, as the trainers do), backward, global-norm clipping, the learning rate lr_of_step(step),
    AdamW. numpy_gpt steps as numpy_gpt.train does (numpy_run); torch_gpt through torch_gpt.train's own
    make_optimizer, accumulate_gradients and optimizer_step, so a trainer that drifts fails parity.
    -> (numpy_gpt's Run, torch_gpt's Run)
    """
    model = torch_model(params, config, torch_dtype)
    opt = trainer.make_optimizer(model, DEFAULTS, CPU)
    losses = []
    for step, (x, y) in enumerate(batches):
        # as torch_gpt.train steps: one micro-batch, one process, no autocast
        masks = None
        if dropout:
            masks = [torch.from_numpy(m) for m in dropout_masks(config, *x.shape, dropout,
                                                                np.random.default_rng(dropout_seed(seed, step)),
                                                                next(iter(params.values())).dtype)]
        loss = trainer.accumulate_gradients(model, [(torch.from_numpy(x), torch.from_numpy(y), masks)],
                                            contextlib.nullcontext(), 1)
        trainer.optimizer_step(model, opt, lr_of_step(step), DEFAULTS.grad_clip)
        losses.append(loss.item())
    return numpy_run(params, config, batches, lr_of_step, dropout, seed), Run(losses, model.numpy_params())


def compare_run(prefix, a, b, ref, shadow):
    """Rows for the dicts of tensors a and b at the end of a run, each with its bar from run_tolerance (ref:
    numpy_gpt's run, shadow: its shadow run). A name that a or b lacks is a failing row."""
    rows = []
    for name in list(ref) + [n for n in {**a, **b} if n not in ref]:
        if name in a and name in b and name in ref:
            rows.append(compare(prefix + name, a[name], b[name], run_tolerance(ref[name], shadow[name], b[name])))
        else:
            shape = np.shape(ref.get(name, a.get(name, b.get(name))))
            rows.append(Row(prefix + name + " (missing in one run)", shape, math.inf, math.inf, 0.0))
    return rows


def compare_losses(prefix, a, b, ref, shadow, logits, dtype="float64"):
    """Rows for two runs' losses, one a step (or an evaluation): each within LAMBDA times the shadow's
    distance from numpy_gpt's run, plus the loss's own rounding (loss_tolerance; logits: the largest |logit|
    at each loss)."""
    rows = []
    for s, (x, y, r, h, z) in enumerate(zip(a, b, ref, shadow, logits, strict=True)):
        bar = LAMBDA * abs(h - r) + loss_tolerance(r, z, dtype)
        rows.append(compare(f"{prefix}{s}", x, y, bar / max(abs(y), FLOOR)))
    return rows


def optimizer_step_both(params, config, grads, lr, torch_dtype):
    """One clipped AdamW step in each backend from the same params and the same gradients; torch_gpt's
    with torch_gpt.train's own make_optimizer and optimizer_step.

    -> (numpy params, torch params, the gradient norm before clipping)
    """
    np_params = {k: v.copy() for k, v in params.items()}
    clipped, norm = clip_grad_norm(grads, DEFAULTS.grad_clip)
    adamw_step(np_params, clipped, adamw_init(np_params), lr, (DEFAULTS.beta1, DEFAULTS.beta2),
               weight_decay=DEFAULTS.weight_decay)
    model = torch_model(params, config, torch_dtype)
    opt = trainer.make_optimizer(model, DEFAULTS, CPU)
    for name, p in model.named_parameters():
        p.grad = torch.from_numpy(grads[name].copy())
    trainer.optimizer_step(model, opt, lr, DEFAULTS.grad_clip)        # sets lr, clips, steps
    return np_params, model.numpy_params(), norm


@dataclass
class Report:
    sections: list      # [(title, rows)]
    notes: list         # lines printed under the table

    @property
    def ok(self):
        return all(r.ok for _, rows in self.sections for r in rows)

    def rows(self):
        return [r for _, rows in self.sections for r in rows]


def run_parity(checkpoint=None, dtype="float64", steps=50, seed=0, config=None, batch_size=4, T=None):
    """Everything the parity command checks -> Report."""
    np_dtype, torch_dtype = DTYPES[dtype]
    tol = TOLERANCE[dtype]
    params, config = load_params(checkpoint, seed, np_dtype, config)
    x, y = make_batch(config, seed, batch_size, T)

    acts, grads = numpy_forward_backward(params, config, x, y)
    t_acts, t_grads, t_fast_grads = torch_forward_backward(torch_model(params, config, torch_dtype), x, y)
    sections = [("activations", compare_dicts("", acts, t_acts, tol)),
                ("parameter gradients (explicit attention)", compare_dicts("grad ", grads, t_grads, tol)),
                ("parameter gradients (scaled_dot_product_attention, the training path)",
                 compare_dicts("grad ", grads, t_fast_grads, tol))]

    # the optimizer: the same gradients into both AdamWs (clipping each its own way), at the learning
    # rate of the default run's first step
    first_lr = schedule(DEFAULTS.steps)(0)
    p1, t_p1, norm = optimizer_step_both(params, config, grads, first_lr, torch_dtype)
    sections.append(("the update of one AdamW step, p1 - p0 (the same gradients into both optimizers)",
                     compare_updates("update ", params, p1, t_p1, tol)))
    notes = [f"one step: gradient norm {norm:.4g} before clipping to {DEFAULTS.grad_clip}, lr {first_lr:.3g} "
             f"(the first step of the default {DEFAULTS.steps}-step run)"]
    # end to end, each backend with its own gradients: reported, not judged (docs/parity.md: "AdamW and zero gradients")
    numpy_one, torch_one = train_both(params, config, [(x, y)], lambda step: first_lr, torch_dtype)
    worst = max(compare_dicts("", numpy_one.params, torch_one.params, tol), key=lambda r: r.max_rel)
    notes.append(f"one step end to end (each backend's own gradients): worst {worst.name} at {worst.max_rel:.2e} "
                 f"(not judged)")

    if steps:
        p64, _ = load_params(checkpoint, seed, np.float64, config)
        batches = [make_batch(config, seed + 1 + s, batch_size, T) for s in range(steps)]
        numpy_gpts, torch_gpts = train_both(p64, config, batches, schedule(steps), torch.float64, DEFAULTS.dropout,
                                            seed)
        shadow = numpy_run(p64, config, batches, schedule(steps), DEFAULTS.dropout, seed, Shadow())
        loss_rows = compare_losses("loss at step ", numpy_gpts.losses, torch_gpts.losses, numpy_gpts.losses,
                                   shadow.losses, numpy_gpts.logits)
        worst = max(loss_rows, key=lambda r: r.margin)
        sections.append((f"trajectory: {steps} steps, float64 (the worst of {steps} step losses, then every "
                         f"parameter; each bar from the shadow run)",
                         [worst] + [r for r in loss_rows if not r.ok and r is not worst] +
                         compare_run(f"step{steps} ", numpy_gpts.params, torch_gpts.params, numpy_gpts.params,
                                     shadow.params)))
        notes.append(f"trajectory: loss {numpy_gpts.losses[0]:.4f} -> {numpy_gpts.losses[-1]:.4f}, lr up to "
                     f"{DEFAULTS.lr:g}, dropout {DEFAULTS.dropout:g} (the same masks in both); "
                     f"{sum(n > DEFAULTS.grad_clip for n in numpy_gpts.norms)} of {steps} steps clipped; each bar is "
                     f"{LAMBDA} times how far numpy_gpt's run moves when every step carries the error model's "
                     f"errors (docs/parity.md, \"A run of many steps\")")
    return Report(sections, notes)


def format_report(report, dtype, title):
    lines = [title, "",
             f"max rel = max|numpy - torch| / max(max|torch|, {FLOOR:g}): the largest difference relative to the "
             f"tensor's largest entry", ""]
    for section, rows in report.sections:
        width = max(len(r.name) for r in rows)
        lines += [f"## {section}", "",
                  f"| {'tensor':<{width}} | {'shape':<16} | {'max abs':>9} | {'max rel':>9} | {'tol':>7} |   |",
                  f"|{'-' * (width + 2)}|{'-' * 18}|{'-' * 11}|{'-' * 11}|{'-' * 9}|---|"]
        for r in rows:
            lines.append(f"| {r.name:<{width}} | {str(tuple(r.shape)):<16} | {r.max_abs:9.2e} | {r.max_rel:9.2e} | "
                         f"{r.tol:7.1e} | {'ok' if r.ok else 'FAIL'} |")
        lines.append("")
    lines += ["## summary: the worst tensor of each section", "",
              "| section | tensors | worst max rel | tensor | tol |", "|---|---:|---:|---|---:|"]
    for section, rows in report.sections:
        w = max(rows, key=lambda r: r.margin)
        lines.append(f"| {section} | {len(rows)} | {w.max_rel:.2e} | {w.name} | {w.tol:.1e} |")
    lines += [""] + report.notes
    return "\n".join(lines)
