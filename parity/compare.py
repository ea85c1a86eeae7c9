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
from torch_gpt.model import GPT
from torch_gpt import train as trainer      # its optimizer and step, called as the trainer calls them

# The error model behind the tolerances. A sum of n terms in which each addition and product
# rounds with an independent zero-mean error of at most u (the unit roundoff) errs by more than
# lambda sqrt(n) u sum|term| with probability at most 2 n exp(-lambda^2 (1 - u)^2 / 2) (Higham and Mary,
# "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41, 2019, Theorem
# 2.4). LAMBDA = 8 makes that 4e-10 for n = 15,000. The worst-case bound, n u sum|term| (Higham,
# Accuracy and Stability of Numerical Algorithms, 3.1), holds for any errors but grows with n.
LAMBDA = 8


def gamma_tilde(n, u, lam=LAMBDA):
    """The probabilistic bound on the relative error of n roundings: exp(lambda sqrt(n) u + n u^2 / (1 - u))
    - 1, which is lambda sqrt(n) u to first order (Higham and Mary, Theorem 2.4)."""
    return math.expm1(lam * math.sqrt(n) * u + n * u * u / (1 - u))


def path_roundings(config, T=None):
    """How many roundings one entry of an activation or gradient can pass through, at most: every sum and
    elementwise operation from the input to the loss (the forward) and back (the backward, whose sums
    have the forward's lengths, transposed), one rounding per term a sum adds.

    Per block, forward: two LayerNorms (a mean and a variance over C, then 4 elementwise operations),
    the products c_attn (C terms), q k^T (D), att v (T) and c_proj (C), the softmax (its sum over T and
    3 elementwise), c_fc (C), GELU (8 elementwise) and the MLP's c_proj (4C), two residual additions.
    After the blocks: ln_f, lm_head (C terms), the cross-entropy (a sum over V and 4 elementwise).
    The backward doubles it. The kid: 14,650."""
    C, V, D, L = config.n_embd, config.vocab_size, config.n_embd // config.n_head, config.n_layer
    T = T or config.block_size
    layernorm = 2 * C + 4
    block = 2 * layernorm + C + D + T + C + (T + 3) + C + 8 + 4 * C + 2
    return 2 * (L * block + layernorm + C + V + 4)


# Tolerances on the measure above, derived from that model. Each backend's entry lies within
# gamma_tilde(n, u) sum|term| of the exact value, n being the roundings of the kid's longest path
# (path_roundings: 14,650) plus its gradients' final sums over the B T = 512 positions of parity's batch:
# 15,162. Two backends differ by twice that, on the measure above where a tensor's largest entry is not
# itself small by cancellation (sum|term| of the order of the entry). The configurations the tests draw
# are smaller than the kid, with fewer roundings; tests/test_parity.py skips the draws where the premise
# fails (test_parity.well_conditioned: numpy_gpt's float32 misses its own float64 by more than one
# float32 computation of that config may), and
# tests/test_ddp.py bounds gradients entry by entry on sum|term| itself. A real mistake (a missing term,
# a wrong scale) shows up at 1e-3 or more.
KID_ROUNDINGS = path_roundings(GPTConfig()) + 4 * GPTConfig().block_size
TOLERANCE = {
    "float64": 2 * gamma_tilde(KID_ROUNDINGS, 2.0 ** -53),      # u = 2^-53: 2.2e-13
    "float32": 2 * gamma_tilde(KID_ROUNDINGS, 2.0 ** -24),      # u = 2^-24: 1.2e-4
}
# The trajectory: 50 steps of AdamW, float64. Each update divides by sqrt(v), which amplifies
# tiny differences where gradients are small; we measure 2.5e-12 (from the init) to 7e-12 (from the
# trained kid) after 50 steps, in the key bias, whose true gradient is zero. 1e-10 is the bar.
TRAJECTORY_TOLERANCE = 1e-10
# One AdamW step compares the updates p1 - p0 on the update's own scale (see compare_updates). Each
# backend rounds at the parameter's scale up to three times (the decay factor 1 - lr*wd, the decayed
# parameter, the updated one), each within u|p| for u the unit roundoff, so two correct steps can differ
# by 6u max|p| in the update, whatever its size. The allowance is 8u max|p|: in float32, at the first
# step's lr of 3e-5, that is 1.6e-2 of the update for a LayerNorm gain of 1 and 1.6e-3 for a weight of
# 0.1, while weight decay left out shifts the update by lr*wd*max|p| = 6.25 times the allowance (always:
# lr*wd / 8u), and a 30% error in the update by 0.3.
UPDATE_ROUNDINGS = 8
FLOOR = 1e-30    # the absolute floor of the scale: only an all-zero tensor ever reaches it
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


def train_both(params, config, batches, lr_of_step, torch_dtype, dropout=0.0, seed=0):
    """Run len(batches) steps of the full update in both backends from the same params.

    Each step: forward with dropout (both backends draw the same masks, from one seeded NumPy stream
    per step, as the trainers do), backward, global-norm clipping, the learning rate lr_of_step(step),
    AdamW. numpy_gpt steps as numpy_gpt.train does; torch_gpt through torch_gpt.train's own
    make_optimizer, accumulate_gradients and optimizer_step, so a trainer that drifts fails parity.
    -> (numpy losses, torch losses, numpy params, torch params, grad norms before clipping)
    """
    np_params = {k: v.copy() for k, v in params.items()}
    state = adamw_init(np_params)
    model = torch_model(params, config, torch_dtype)
    opt = trainer.make_optimizer(model, DEFAULTS, CPU)
    np_losses, torch_losses, norms = [], [], []
    for step, (x, y) in enumerate(batches):
        lr = lr_of_step(step)
        # numpy_gpt, as numpy_gpt.train steps
        _, loss, cache = gpt_forward(np_params, config, x, y, dropout, np.random.default_rng(dropout_seed(seed, step)))
        grads, norm = clip_grad_norm(gpt_backward(np_params, config, cache), DEFAULTS.grad_clip)
        adamw_step(np_params, grads, state, lr, (DEFAULTS.beta1, DEFAULTS.beta2), weight_decay=DEFAULTS.weight_decay)
        np_losses.append(float(loss))
        norms.append(norm)
        # torch_gpt, as torch_gpt.train steps: one micro-batch, one process, no autocast
        masks = None
        if dropout:
            masks = [torch.from_numpy(m) for m in dropout_masks(config, *x.shape, dropout,
                                                                np.random.default_rng(dropout_seed(seed, step)),
                                                                np_params["wte.weight"].dtype)]
        tloss = trainer.accumulate_gradients(model, [(torch.from_numpy(x), torch.from_numpy(y), masks)],
                                             contextlib.nullcontext(), 1)
        trainer.optimizer_step(model, opt, lr, DEFAULTS.grad_clip)
        torch_losses.append(tloss.item())
    return np_losses, torch_losses, np_params, model.numpy_params(), norms


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
    _, _, pe, t_pe, _ = train_both(params, config, [(x, y)], lambda step: first_lr, torch_dtype)
    worst = max(compare_dicts("", pe, t_pe, tol), key=lambda r: r.max_rel)
    notes.append(f"one step end to end (each backend's own gradients): worst {worst.name} at {worst.max_rel:.2e} "
                 f"(not judged)")

    if steps:
        p64, _ = load_params(checkpoint, seed, np.float64, config)
        batches = [make_batch(config, seed + 1 + s, batch_size, T) for s in range(steps)]
        np_losses, t_losses, pN, t_pN, norms = train_both(p64, config, batches, schedule(steps), torch.float64,
                                                          DEFAULTS.dropout, seed)
        loss_rows = [compare(f"loss at step {s}", a, b, TRAJECTORY_TOLERANCE) for s, (a, b) in
                     enumerate(zip(np_losses, t_losses))]
        worst = max(loss_rows, key=lambda r: r.max_rel)
        sections.append((f"trajectory: {steps} steps, float64 (the worst of {steps} step losses, then every "
                         f"parameter)", [worst] + [r for r in loss_rows if not r.ok and r is not worst] +
                         compare_dicts(f"step{steps} ", pN, t_pN, TRAJECTORY_TOLERANCE)))
        notes.append(f"trajectory: loss {np_losses[0]:.4f} -> {np_losses[-1]:.4f}, lr up to {DEFAULTS.lr:g}, "
                     f"dropout {DEFAULTS.dropout:g} (the same masks in both); "
                     f"{sum(n > DEFAULTS.grad_clip for n in norms)} of {steps} steps clipped")
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
                         f"{r.tol:7.0e} | {'ok' if r.ok else 'FAIL'} |")
        lines.append("")
    lines += ["## summary: the worst tensor of each section", "",
              "| section | tensors | worst max rel | tensor | tol |", "|---|---:|---:|---|---:|"]
    for section, rows in report.sections:
        w = max(rows, key=lambda r: r.max_rel / r.tol)
        lines.append(f"| {section} | {len(rows)} | {w.max_rel:.2e} | {w.name} | {w.tol:.0e} |")
    lines += [""] + report.notes
    return "\n".join(lines)
