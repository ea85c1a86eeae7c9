"""python -m numpy_gpt.train: train the kid with the NumPy reference (slower than torch_gpt, same math).

Writes to --out: kid.npz (the shared weights format), log.jsonl (one line per evaluation) and loss.png.
"""
import time
from pathlib import Path

import numpy as np

from .checkpoint import save_weights
from .cli import (Progress, StopRequest, check_output, check_training_args, keep_freed_memory, plot_losses,
                  prepare_data, run_cli, training_parser, write_log)
from .config import UserError
from .data import batch_rng, dropout_seed, get_batch
from .model import gpt_backward, gpt_forward, init_params, num_params
from .optim import adamw_init, adamw_step, clip_grad_norm, lr_at


def estimate_loss(params, config, batches):
    """Mean loss over fixed batches."""
    return float(np.mean([gpt_forward(params, config, x, y)[1] for x, y in batches]))


def parser():
    return training_parser("python -m numpy_gpt.train", "Train the kid with the NumPy reference implementation.",
                           trainer="numpy_gpt")


def main(argv=None):
    args = check_training_args(parser().parse_args(argv))
    out = Path(args.out)
    check_output(out, "--out", folder=True)
    if (out / "kid.npz").exists():
        raise UserError(f"{out / 'kid.npz'} already exists; pass another --out, or delete it to train anew")
    tokenizer, config, train_ids, _, evals = prepare_data(args)
    keep_freed_memory()
    params = init_params(config, seed=args.seed, dtype=np.dtype(args.dtype))
    opt = adamw_init(params)
    print(f"numpy_gpt: {num_params(params):,} parameters, {config}, {args.dtype}")
    print(f"data: {len(train_ids):,} training characters, vocabulary of {tokenizer.vocab_size}")

    log, step = [], 0
    tokens_per_step = args.batch_size * config.block_size
    progress, rate = Progress(args.steps), 0.0
    with StopRequest() as stop:
        while True:
            if step % args.eval_interval == 0 or step == args.steps:
                log.append({"step": step, "train_loss": estimate_loss(params, config, evals["train"]),
                            "val_loss": estimate_loss(params, config, evals["val"]),
                            "lr": lr_at(step, args.lr, args.min_lr, args.warmup_steps, args.steps),
                            "elapsed_s": round(time.perf_counter() - progress.start, 2)})
                write_log(out / "log.jsonl", log)
                progress.say(f"step {step}: train loss {log[-1]['train_loss']:.4f}, "
                             f"val loss {log[-1]['val_loss']:.4f}")
            if step == args.steps or stop.signum:
                break
            t0 = time.perf_counter()
            lr = lr_at(step, args.lr, args.min_lr, args.warmup_steps, args.steps)
            x, y = get_batch(train_ids, args.batch_size, config.block_size, batch_rng(args.seed, step))
            _, loss, _, cache = gpt_forward(params, config, x, y, args.dropout,
                                            np.random.default_rng(dropout_seed(args.seed, step)))
            if not np.isfinite(loss):
                raise UserError(f"the loss became {loss} at step {step}; nothing was saved. Try a lower --lr "
                                f"(now {args.lr}) or --grad-clip 1")
            grads, _ = clip_grad_norm(gpt_backward(params, config, cache), args.grad_clip)
            adamw_step(params, grads, opt, lr, (args.beta1, args.beta2), weight_decay=args.weight_decay)
            step += 1
            recent = tokens_per_step / (time.perf_counter() - t0)
            rate = 0.9 * rate + 0.1 * recent if rate else recent       # smoothed tokens/s
            progress.update(step, float(loss), rate)
    progress.close()
    save_weights(out / "kid.npz", params, config, tokenizer.chars,
                 meta={"step": step, "backend": "numpy_gpt", "val_loss": log[-1]["val_loss"]})
    plot_losses(log, out / "loss.png")
    if stop.signum:
        print(f"stopped by signal {stop.signum} at step {step}; weights saved to {out / 'kid.npz'}")
        return 128 + stop.signum
    print(f"done: val loss {log[-1]['val_loss']:.4f} after {step} steps; weights in {out / 'kid.npz'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
