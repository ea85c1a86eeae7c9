"""python -m torch_gpt.train: the real training of the kid, on a CPU, a GPU, or several through torchrun.

Writes to --out:
    log.jsonl                   one JSON object per evaluation: losses, a sample from --sample-prompt, timing
    checkpoints/step_NNNNN.npz  a weights snapshot at each evaluation (the shared format)
    kid.pt                      the full training state, for --resume (each evaluation, and on a stop)
    kid.npz                     the final weights, for either backend's sampler
    loss.png                    train and val loss against step (needs matplotlib)

Every file is written atomically. A run killed at any moment, even by kill -9, loses at most the
steps since the last evaluation; SIGINT and SIGTERM write kid.pt before exiting.

    torchrun --nproc_per_node=N -m torch_gpt.train ...   data-parallel training (DDP): nccl on CUDA,
                                                         gloo on CPU; rank 0 writes all the files.
"""
import contextlib
import gc
import json
import math
import os
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from numpy_gpt.checkpoint import load_weights, save_weights
from numpy_gpt.cli import (Progress, StopRequest, check_output, check_training_args, keep_freed_memory,
                           plot_losses, prepare_data, run_cli, training_parser, write_log)
from numpy_gpt.config import UserError
from numpy_gpt.data import DEFAULT_PROMPT, batch_rng, default_prompt, dropout_seed, get_batch
from numpy_gpt.model import dropout_masks
from numpy_gpt.optim import lr_at
from numpy_gpt.sampling import generate

from .checkpoint import load_kid, save_kid
from .model import GPT

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
SAMPLE_CHARS, SAMPLE_TEMPERATURE = 200, 0.8
# the settings that shape the trajectory: a resumed run must use the same ones
TRAJECTORY_FLAGS = ("batch_size", "seed", "dtype", "lr", "min_lr", "warmup_steps", "weight_decay",
                    "beta1", "beta2", "grad_clip", "dropout", "micro_batches")


def parser():
    p = training_parser("python -m torch_gpt.train", "Train the kid with PyTorch (the main job).",
                        trainer="torch_gpt")
    g = p.add_argument_group("torch")
    g.add_argument("--sample-prompt", default=None,
                   help=f"the text each evaluation's sample continues; every character must be in the text "
                        f"(default: {DEFAULT_PROMPT} where the text has its characters, else the first 8 of the "
                        f"text's distinct characters, sorted, that are not white space)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto picks cuda, then mps, then cpu")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--resume", action="store_true", help="continue the run saved in OUT/kid.pt")
    g.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches of --batch-size per optimizer step and process")
    return p


def pick_device(name, local_rank):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps, but this torch has no MPS (Apple GPU) support; use --device cpu or auto")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def check_device(device, dtype, world):
    """What a device cannot do, as one line: MPS has no float64, and no process-group backend for torchrun."""
    if device.type == "mps" and dtype == "float64":
        raise UserError("--dtype float64 on --device mps: Apple GPUs have no float64; use --dtype float32, "
                        "or --device cpu")
    if device.type == "mps" and world > 1:
        raise UserError("torchrun with --device mps: torch has no process-group backend for Apple GPUs; run "
                        "one process, or --device cpu (gloo)")


def init_distributed(device_name, dtype="float32"):
    """-> (rank, world_size, device). Under torchrun, joins the process group (nccl on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    check_device(device, dtype, world)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # torch.distributed.nn's functions take the default group as a default argument, bound when it is first
    # imported; DDP imports it (through torch._dynamo). Imported after init_process_group, it would hold the
    # group past destroy_process_group, and the group's gloo threads would run into interpreter shutdown.
    import torch.distributed.nn  # noqa: F401
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def barrier(device):
    """dist.barrier; nccl is told this rank's GPU, which it would otherwise have to guess."""
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def leave_distributed():
    """Destroy the process group now, while Python still runs, so that gloo's threads are joined here
    rather than left running into interpreter shutdown, where a C++ thread that reaches for Python is ended
    by an unwind that aborts the process ("terminate called without an active exception", as rank 1 did
    now and then). Nothing may hold the group by then: no DDP wrapper, whose reducer holds it."""
    gc.collect()            # a wrapper kept only by a reference cycle (torch.compile makes some)
    dist.destroy_process_group()


def make_optimizer(model, args, device):
    """AdamW; weight decay only on the 2-D weights (matmuls and embeddings), as numpy_gpt.optim.decays."""
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8,
                             fused=device.type in ("cuda", "cpu"))


@torch.inference_mode()
def estimate_loss(model, batches, autocast):
    losses = []
    for x, y in batches:
        with autocast:
            losses.append(model(x, y)[1].float())
    return torch.stack(losses).mean().item()


@torch.inference_mode()
def sample_text(model, tokenizer, prompt, seed, device):
    """SAMPLE_CHARS characters after the prompt, always with the same random numbers."""
    kv = model.new_kv_cache(1)

    def prefill(ids):
        return model.prefill(torch.tensor([ids], device=device), kv)[0].float().cpu().numpy()

    def decode(token, pos):
        return model.decode(torch.tensor([token], device=device), pos, kv)[0].float().cpu().numpy()

    tokens = [t for t, _ in generate(prefill, decode, tokenizer.encode(prompt), SAMPLE_CHARS,
                                     model.config.block_size, np.random.default_rng(seed), SAMPLE_TEMPERATURE)]
    return prompt + tokenizer.decode(tokens)


def wrap_model(model, compile, world, device):
    """DDP around the model, then torch.compile around that: compiling the DDP-wrapped model lets
    TorchDynamo's DDPOptimizer split the graph at DDP's gradient buckets, so their all-reduces overlap
    the backward (PyTorch's "torch.compile and DDP" notes). The other order compiles one graph whose
    gradients DDP can only reduce after it."""
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if compile else model


def device_dropout_masks(config, B, T, p, seed, device, dtype):
    """The 2 * n_layer dropout masks (B, T, C) drawn on the device itself, from a torch generator seeded
    by seed: 0 with probability p, else 1 / (1 - p). A GPU trains with these; drawing numpy_gpt's masks
    on one CPU core and copying them over every step would cap its throughput. The same seed gives the
    same masks on the same device, not numpy_gpt's."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return [(torch.rand((B, T, config.n_embd), generator=g, device=device) >= p).to(dtype) / (1.0 - p)
            for _ in range(2 * config.n_layer)]


def micro_batches(train_ids, args, step, rank, config, device, dtype):
    """This process's --grad-accum micro-batches for one step, as (x, y, dropout masks or None).

    Rank r takes micro-batches r*K .. r*K+K-1 (numpy_gpt.data.batch_rng and dropout_seed), so W ranks
    x K micro-batches see exactly the examples and dropout masks that one process with
    --grad-accum W*K sees. On a CPU the masks come from numpy_gpt.model.dropout_masks: the ones
    numpy_gpt's trainer draws for the same step; on a GPU, from device_dropout_masks.
    """
    out = []
    for k in range(args.grad_accum):
        micro = rank * args.grad_accum + k
        x, y = get_batch(train_ids, args.batch_size, config.block_size, batch_rng(args.seed, step, micro))
        masks = None
        if args.dropout > 0 and device.type != "cpu":
            masks = device_dropout_masks(config, *x.shape, args.dropout, dropout_seed(args.seed, step, micro),
                                         device, dtype)
        elif args.dropout > 0:
            rng = np.random.default_rng(dropout_seed(args.seed, step, micro))
            masks = [torch.from_numpy(m) for m in dropout_masks(config, *x.shape, args.dropout, rng,
                                                                 NUMPY_DTYPES[dtype])]
        out.append((torch.from_numpy(x).to(device, non_blocking=True),
                    torch.from_numpy(y).to(device, non_blocking=True), masks))
    return out


def accumulate_gradients(model, batches, autocast, world):
    """Forward and backward over the micro-batches, leaving the gradient of their mean loss in .grad.

    Under DDP the gradients are averaged across ranks during the last backward only (no_sync before):
    the result is the gradient of the mean loss over all ranks' micro-batches. -> the last loss.
    """
    for k, (x, y, masks) in enumerate(batches):
        last = k == len(batches) - 1
        with (model.no_sync() if world > 1 and not last else contextlib.nullcontext()), autocast:
            _, loss = model(x, y, masks=masks)
        (loss / len(batches)).backward()
    return loss


def optimizer_step(model, optimizer, lr, grad_clip):
    """Clip the global gradient norm, then one AdamW step at lr, then clear the gradients."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def check_resume(ckpt, config, tokenizer, args, path):
    """A resumed run must be the same run: same model, vocabulary and trajectory settings."""
    if ckpt["config"] != config:
        diff = [f"{k}={v} (flags say {getattr(config, k)})" for k, v in ckpt["config"].to_dict().items()
                if getattr(config, k) != v]
        raise UserError(f"{path} was trained with {', '.join(diff)}; pass the same flags to resume it, "
                        f"or a new --out to start another run")
    if ckpt["vocab"] != tokenizer.chars:
        raise UserError(f"{path} was trained on a text with another vocabulary; pass the same --data")
    diff = [f"{ckpt['settings'][k]} micro-batches per step (processes x --grad-accum; now {args.micro_batches})"
            if k == "micro_batches" else f"--{k.replace('_', '-')} {ckpt['settings'][k]} (flags say {getattr(args, k)})"
            for k in TRAJECTORY_FLAGS if ckpt["settings"].get(k) != getattr(args, k)]
    if diff:
        raise UserError(f"{path} was trained with {', '.join(diff)}; pass the same settings to resume it "
                        f"(--steps may change), or a new --out to start another run")


def main(argv=None):
    args = check_training_args(parser().parse_args(argv))
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
    rank, world, device = init_distributed(args.device, args.dtype)
    args.micro_batches = world * args.grad_accum        # micro-batches of --batch-size per optimizer step
    try:
        status = train(args, rank, world, device)
        if world > 1:
            barrier(device)         # no rank leaves while rank 0 still writes the last files
        return status
    except BaseException as e:
        if world > 1:       # its frames would keep train()'s DDP wrapper alive, and the wrapper's reducer the group
            traceback.clear_frames(e.__traceback__)
        raise
    finally:
        if world > 1:
            leave_distributed()


def train(args, rank, world, device):
    """The training run of one process -> its exit status."""
    out = Path(args.out)
    kid_pt = out / "kid.pt"
    master = rank == 0
    say = print if master else (lambda *a, **k: None)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    tokenizer, config, train_ids, _, evals = prepare_data(args)
    if args.sample_prompt is None:
        args.sample_prompt = default_prompt(tokenizer.chars)
    try:
        tokenizer.encode(args.sample_prompt)
    except UserError as e:
        raise UserError(f"--sample-prompt has {e}") from None
    evals = {split: [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in batches]
             for split, batches in evals.items()}
    ckpt = load_kid(kid_pt) if args.resume else None
    if ckpt:
        check_resume(ckpt, config, tokenizer, args, kid_pt)

    model = GPT(config, seed=args.seed, dtype=dtype).to(device)
    optimizer = make_optimizer(model, args, device)
    step, log, elapsed_before = 0, [], 0.0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        step, elapsed_before = ckpt["step"], ckpt["elapsed_s"]
        if (out / "log.jsonl").exists():     # keep what the checkpoint had seen; drop later lines
            log = [e for e in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if e["step"] <= step]
        # a stop that lands on the last step leaves its evaluation and kid.npz to this run
        finished = (bool(log) and log[-1]["step"] == step and (out / "kid.npz").exists()
                    and load_weights(out / "kid.npz")[3].get("step") == step)
        if step > args.steps or (step == args.steps and finished):
            say(f"{kid_pt} is already at step {step} of --steps {args.steps}: nothing to do; raise --steps "
                f"to train longer")
            return 0
        say(f"resuming {kid_pt} at step {step} of {args.steps}")
        threads = ckpt.get("threads")       # torch's CPU sums split their work by thread count
        if device.type == "cpu" and threads not in (None, torch.get_num_threads()):
            say(f"warning: {kid_pt} was trained with {threads} CPU threads and this run has "
                f"{torch.get_num_threads()}, so it will not end bit-identical to a run that never stopped; "
                f"set OMP_NUM_THREADS={threads} for that")

    raw_model = model
    model = wrap_model(model, args.compile, world, device)
    bf16 = device.type == "cuda" and dtype == torch.float32
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    sync_every = 1 if device.type == "cpu" else 10      # reading the loss waits for the GPU: not every step
    tokens_per_step = args.batch_size * config.block_size * args.micro_batches
    say(f"torch_gpt: {sum(p.numel() for p in raw_model.parameters()):,} parameters, {config}, {args.dtype}"
        f"{' (bf16 autocast)' if bf16 else ''}, device {device}, {world} process(es) x {args.grad_accum} "
        f"micro-batch(es) of {args.batch_size}: {tokens_per_step:,} tokens per step")

    def checkpoint_state():
        return {"step": step, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "config": config.to_dict(), "vocab": tokenizer.chars,
                "settings": {k: getattr(args, k) for k in TRAJECTORY_FLAGS},
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                "elapsed_s": elapsed_before + time.perf_counter() - start,
                "tokens_per_s": rate, "threads": torch.get_num_threads()}

    def evaluate():
        raw_model.eval()
        entry = {"step": step,
                 "train_loss": estimate_loss(raw_model, evals["train"], autocast),
                 "val_loss": estimate_loss(raw_model, evals["val"], autocast),
                 "lr": lr_at(min(step, args.steps - 1), args.lr, args.min_lr, args.warmup_steps, args.steps),
                 "tokens_per_s": round(rate), "elapsed_s": round(elapsed_before + time.perf_counter() - start, 1),
                 "sample": sample_text(raw_model, tokenizer, args.sample_prompt, args.seed, device)}
        raw_model.train()
        save_weights(out / "checkpoints" / f"step_{step:05d}.npz", raw_model.numpy_params(), config,
                     tokenizer.chars, meta={k: entry[k] for k in ("step", "train_loss", "val_loss")})
        log.append(entry)
        write_log(out / "log.jsonl", log)
        save_kid(kid_pt, checkpoint_state())
        plot_losses(log, out / "loss.png", say=progress.say)
        progress.say(f"step {step}: train loss {entry['train_loss']:.4f}, val loss {entry['val_loss']:.4f}, "
                     f"{entry['elapsed_s']:.0f}s\n{entry['sample']}\n")

    rate, stopped = ckpt.get("tokens_per_s", 0.0) if ckpt else 0.0, None
    progress = Progress(args.steps, first_step=step) if master else None
    start = mark_time = time.perf_counter()
    mark_step = step
    with StopRequest() as stop:
        while True:
            # a resumed run evaluates its first step too unless the log has it: a stop comes after
            # step += 1, before that step's evaluation at the top of the next pass
            logged = bool(log) and log[-1]["step"] == step
            if master and (step % args.eval_interval == 0 or step == args.steps) and not logged:
                evaluate()
                mark_time, mark_step = time.perf_counter(), step     # tokens/s counts training time only
            if step == args.steps:
                break
            batches = micro_batches(train_ids, args, step, rank, config, device, dtype)
            loss = accumulate_gradients(model, batches, autocast, world)
            optimizer_step(raw_model, optimizer, lr_at(step, args.lr, args.min_lr, args.warmup_steps, args.steps),
                           args.grad_clip)
            step += 1
            if step % sync_every == 0 or step == args.steps:
                # all ranks agree, at the same step, on whether to stop and whether the loss blew up
                flags = torch.tensor([float(stop.signum or 0), float(not math.isfinite(loss.item()))], device=device)
                if world > 1:
                    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                if flags[1]:
                    raise UserError(f"the loss became {loss.item()} at step {step}; stopped without saving. "
                                    f"{kid_pt} still holds the last good state. Try a lower --lr (now {args.lr})"
                                    f"{' or --grad-clip 1' if not args.grad_clip else ''}")
                if flags[0]:
                    stopped = int(flags[0])
                    break
                now = time.perf_counter()
                recent = tokens_per_step * (step - mark_step) / (now - mark_time)
                rate = 0.9 * rate + 0.1 * recent if rate else recent
                mark_time, mark_step = now, step
                if master:
                    progress.update(step, loss.item(), rate)
    if master:
        progress.close()
    if stopped:
        if master:
            save_kid(kid_pt, checkpoint_state())
            say(f"stopped by signal {stopped} at step {step}; the state is in {kid_pt}: continue with --resume")
        return 128 + stopped
    if master:
        save_weights(out / "kid.npz", raw_model.numpy_params(), config, tokenizer.chars,
                     meta={"step": step, "backend": "torch_gpt", "val_loss": log[-1]["val_loss"]})
        say(f"done: val loss {log[-1]['val_loss']:.4f} after {step} steps, "
            f"{log[-1]['elapsed_s']:.0f} s; weights in {out / 'kid.npz'}, state in {kid_pt}")
    return 0


if __name__ == "__main__":
    run_cli(main)
