"""python -m torch_gpt.kid: the whole training of the kid in one file, read top to bottom.

A character-level GPT learns to write Shakespeare by predicting the next character. This file is the
training run and nothing else: the text and its vocabulary, the batches, the model (torch_gpt.model),
AdamW with its learning-rate schedule, the loop with its evaluations and samples, and kid.npz at the
end. Its settings are the constants below; edit them to change the run.

It is the run `python -m torch_gpt.train --device cpu --bf16 off` makes, step for step:
tests/test_kid_file.py trains both for 50 steps in float32 on one CPU thread and finds the same losses
and the same weights, bit for bit. What the full trainer adds is machinery around the same steps:
flags, resume, snapshots, DDP, bf16 and CUDA graphs, a progress line.

Shape key: B batch, T time (block_size), C channels, V vocab.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from numpy_gpt.config import GPTConfig
from torch_gpt.model import GPT

# ------------------------------------------------------------------------------------------------
# the settings: the model is GPTConfig's defaults (4 layers, 4 heads, 128 wide, 128 characters)

DATA = "data/tinyshakespeare.txt"   # any UTF-8 text (python -m torch_gpt.train downloads this one)
OUT = "out-kid"                 # where kid.npz goes
DEVICE = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
SEED = 1337                     # seeds the init, the batches, the dropout masks and the samples
STEPS = 5000                    # optimizer steps
BATCH_SIZE = 32                 # B: sequences per step
LR, MIN_LR, WARMUP_STEPS = 3e-3, 3e-5, 100     # warmup to LR, then a half cosine down to MIN_LR
BETAS, WEIGHT_DECAY = (0.9, 0.99), 0.1         # AdamW; weight decay on the 2-D weights only
GRAD_CLIP = 1.0                 # the gradients' global norm is clipped to this
DROPOUT = 0.1                   # probability of dropping each entry of a residual branch, in training
EVAL_INTERVAL = 500             # every N steps: the losses and a sample
EVAL_BATCHES, EVAL_TRAIN_BATCHES = 50, 20      # fixed batches for the val and the train loss
PROMPT, SAMPLE_CHARS, TEMPERATURE = "ROMEO:", 200, 0.8
CONFIG = GPTConfig()            # vocab_size is set from the text below

# Every random number comes from NumPy, each kind from its own stream of the one seed, as in
# numpy_gpt.data: a stream's key is [SEED, tag, ...], and no two tags share bits.
INIT, BATCH, DROPOUT_MASKS, EVAL, SAMPLE = 1, 2, 3, 4, 5


def get_batch(ids, rng, batch_size, T):
    """B random windows of T + 1 characters: x is each window's first T, y the same shifted by one."""
    windows = np.lib.stride_tricks.sliding_window_view(ids, T + 1)      # (N - T, T + 1), no copy
    batch = windows[rng.integers(0, len(windows), size=batch_size)]     # (B, T + 1)
    return torch.from_numpy(batch[:, :-1]).to(DEVICE), torch.from_numpy(batch[:, 1:]).to(DEVICE)


def dropout_masks(step, config, batch_size):
    """The 2 * n_layer masks (B, T, C) of one step, one per residual branch: 0 with probability DROPOUT,
    else 1 / (1 - DROPOUT), so a branch's expected output is unchanged (numpy_gpt.model.dropout_masks)."""
    seed = int(np.random.SeedSequence([SEED, DROPOUT_MASKS, step, 0]).generate_state(1)[0])
    rng = np.random.default_rng(seed)
    shape = (batch_size, config.block_size, config.n_embd)
    return [torch.from_numpy((rng.random(shape, dtype=np.float32) >= DROPOUT).astype(np.float32)
                             / (1.0 - DROPOUT)).to(DEVICE) for _ in range(2 * config.n_layer)]


def lr_at(step):
    """Linear warmup from LR / WARMUP_STEPS up to LR, then a half cosine from LR down to MIN_LR at STEPS."""
    if step < WARMUP_STEPS:
        return LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, STEPS - WARMUP_STEPS)        # 0 -> 1
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (LR - MIN_LR)


@torch.inference_mode()
def estimate_loss(model, batches):
    """The mean loss over fixed batches, the model without dropout."""
    model.eval()
    losses = [model(x, y)[1].item() for x, y in batches]
    model.train()
    return float(np.mean(losses))


@torch.inference_mode()
def sample(model, ids, n, rng):
    """n characters after ids (a list), each drawn from the softmax of the last position's logits at
    TEMPERATURE. The model sees the last block_size characters (no KV cache: python -m torch_gpt.sample
    has one)."""
    model.eval()
    ids = list(ids)
    for _ in range(n):
        idx = torch.tensor([ids[-model.config.block_size:]], device=DEVICE)       # (1, T)
        logits = model(idx)[0][0, -1].double().cpu()                             # (V,)
        probs = F.softmax(logits / TEMPERATURE, dim=-1).numpy()                  # (V,)
        ids.append(int(rng.choice(len(probs), p=probs)))
    model.train()
    return ids


def save_kid(path, model, config, chars, meta):
    """kid.npz, the weights file numpy_gpt.sample, torch_gpt.sample and peek read: every parameter under
    its name, the config, the vocabulary and a few facts, nothing pickled. Written to a temporary file
    first and then renamed, so that it is never half-written."""
    arrays = {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}
    arrays["__format__"] = np.array("tiny-llm weights v1")
    arrays["__config__"] = np.array(json.dumps(config.to_dict()))
    arrays["__vocab__"] = np.array([ord(c) for c in chars], dtype=np.int32)
    arrays["__meta__"] = np.array(json.dumps(meta))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(path + ".tmp", path)


def main():
    """Train the kid; -> the evaluations, [(step, train loss, val loss)]."""
    # the text and its vocabulary: every distinct character, sorted, is one token
    if not os.path.isfile(DATA):
        raise SystemExit(f"error: no text at {DATA}; run python -m torch_gpt.train once (it downloads "
                         f"tinyshakespeare there), or set DATA at the top of torch_gpt/kid.py")
    with open(DATA, encoding="utf-8") as f:
        text = f.read()
    chars = "".join(sorted(set(text)))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.int64)            # (N,)
    n = int(0.9 * len(ids))
    train_ids, val_ids = ids[:n], ids[n:]                              # the first 90% trains
    config = GPTConfig(**{**CONFIG.to_dict(), "vocab_size": len(chars)})
    T = config.block_size
    print(f"{len(text):,} characters, {len(chars)} distinct; {config}; device {DEVICE}")

    # the fixed batches every evaluation measures the loss on, from one stream per split
    evals = {}
    splits = (("train", train_ids, EVAL_TRAIN_BATCHES), ("val", val_ids, EVAL_BATCHES))
    for number, (name, split, count) in enumerate(splits):
        rng = np.random.default_rng([SEED, EVAL, number])
        evals[name] = [get_batch(split, rng, BATCH_SIZE, T) for _ in range(count)]

    # the model, its weights drawn from the INIT stream (numpy_gpt.model.init_params), and AdamW
    model = GPT(config, seed=SEED).to(DEVICE)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
    decay = [p for p in model.parameters() if p.dim() == 2]           # matmul weights and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]         # biases and LayerNorm
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=LR, betas=BETAS, eps=1e-8, fused=DEVICE != "mps")

    log, start = [], time.perf_counter()
    for step in range(STEPS + 1):
        # evaluate: the losses on the fixed batches, and a sample from the same random numbers each time
        if step % EVAL_INTERVAL == 0 or step == STEPS:
            train_loss, val_loss = estimate_loss(model, evals["train"]), estimate_loss(model, evals["val"])
            log.append((step, train_loss, val_loss))
            written = "".join(chars[i] for i in sample(model, [stoi[c] for c in PROMPT], SAMPLE_CHARS,
                                                         np.random.default_rng([SEED, SAMPLE])))
            print(f"\rstep {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                  f"{time.perf_counter() - start:.0f} s\n{written}\n")
        if step == STEPS:
            break

        # one step: a batch, forward with dropout, backward, clip, AdamW at this step's learning rate
        x, y = get_batch(train_ids, np.random.default_rng([SEED, BATCH, step, 0]), BATCH_SIZE, T)  # (B, T)
        masks = dropout_masks(step, config, BATCH_SIZE) if DROPOUT else None
        _, loss = model(x, y, masks=masks)                              # mean cross-entropy over B * T
        loss.backward()
        if GRAD_CLIP:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 10 == 9:                                              # a progress line with the ETA
            left = (time.perf_counter() - start) / (step + 1) * (STEPS - step - 1)
            print(f"\rstep {step + 1}/{STEPS} | loss {loss.item():.4f} | ETA {left / 60:.1f} min", end="", flush=True)

    path = os.path.join(OUT, "kid.npz")
    save_kid(path, model, config, chars, {"step": STEPS, "backend": "torch_gpt.kid", "val_loss": log[-1][2]})
    print(f"done: val loss {log[-1][2]:.4f} after {STEPS} steps; weights in {path} "
          f"(python -m numpy_gpt.sample --checkpoint {path})")
    return log


if __name__ == "__main__":
    if sys.argv[1:] in (["-h"], ["--help"]):
        print(__doc__)
    elif sys.argv[1:]:      # no flags: the settings are the constants at the top of this file
        sys.exit(f"error: python -m torch_gpt.kid takes no flags (got {' '.join(sys.argv[1:])}); edit the constants "
                 "at the top of torch_gpt/kid.py, or use python -m torch_gpt.train, which has flags")
    else:
        main()
