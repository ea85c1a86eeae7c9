"""The character tokenizer, the train/val split and the random batches.

Shape key: B batch, T time (block_size), N characters in a split.
"""
import numpy as np

from .machinery.errors import UserError


class CharTokenizer:
    """Characters to integers and back. The vocabulary is the sorted set of the text's characters."""

    def __init__(self, chars):
        self.chars = "".join(chars)   # the vocabulary, in id order
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        if len(self.stoi) != len(self.chars):
            raise UserError("vocabulary has repeated characters")

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            raise UserError(f"{len(unknown)} character(s) not in the model's {self.vocab_size}-character "
                            f"vocabulary: {shown}; remove or replace them")
        return np.array([self.stoi[c] for c in text], dtype=np.int64)

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


def split_train_val(ids, block_size):
    """The first 90% of the characters train, the last 10% validate. Each split must hold a full example."""
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]
    for name, split in (("train", train), ("val", val)):
        if len(split) < block_size + 1:
            raise UserError(f"the {name} split has {len(split)} characters, fewer than block_size+1 = "
                            f"{block_size + 1}; use a longer text (at least {10 * (block_size + 1) + 10} "
                            f"characters) or a smaller --block-size")
    return train, val


def get_batch(ids, batch_size, block_size, rng):
    """Draw B random windows of T+1 characters: x is each window's first T, y the same shifted by one.

    ids (N,) ints; rng a numpy.random.Generator -> x (B, T), y (B, T) int64
    """
    windows = np.lib.stride_tricks.sliding_window_view(ids, block_size + 1)   # (N-T, T+1), no copy
    start = rng.integers(0, len(windows), size=batch_size)                  # (B,)
    batch = windows[start]                                                  # (B, T+1) copy
    return batch[:, :-1], batch[:, 1:]


# ------------------------------------------------------------------------------------------------
# random streams
#
# A run draws from several random streams, all from its one --seed. Each has its own tag, the second
# word of its key, so no two share bits: NumPy pads a short key with zeros, so without tags
# default_rng(seed) and default_rng([seed, 0, 0]) would be one stream.

INIT, BATCH, DROPOUT, EVAL, SAMPLE = 1, 2, 3, 4, 5


def stream(seed, tag, *key):
    """The generator for one stream: tag is one of INIT .. SAMPLE, key the stream's fixed-length key."""
    return np.random.default_rng([seed, tag, *key])


def batch_rng(seed, step, micro_batch=0):
    """The generator for one micro-batch of one optimizer step.

    Seeding by (seed, step, micro-batch) makes the data position just the step number: a resumed run
    draws exactly the batches it would have drawn. Under torchrun, rank r with --grad-accum K draws
    micro-batches r*K .. r*K+K-1, so every rank has its own stream, and one process with
    --grad-accum W*K sees exactly the examples that W ranks with --grad-accum K see.
    """
    return stream(seed, BATCH, step, micro_batch)


def eval_batches(ids, n_batches, batch_size, block_size, seed, split=0):
    """Fixed batches for measuring loss: the same ones at every evaluation, and in every backend.
    split numbers the split (0 train, 1 val), so each split has a stream of its own."""
    rng = stream(seed, EVAL, split)
    return [get_batch(ids, batch_size, block_size, rng) for _ in range(n_batches)]


def dropout_seed(seed, step, micro_batch=0):
    """A seed for the dropout masks of one micro-batch of one step, keyed like batch_rng, so a resumed
    run, and W ranks x K micro-batches, draw the same masks as the run they stand for. A plain int,
    not a Generator as stream() gives: torch_gpt seeds its GPU generator with it too."""
    return int(np.random.SeedSequence([seed, DROPOUT, step, micro_batch]).generate_state(1)[0])
