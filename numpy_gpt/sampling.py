"""Turning logits into text: the one sampling rule and the generation loop, shared by both backends.

Both backends hand their logits to sample_next as NumPy arrays, which it works on in float64, and draw
from the same numpy.random.Generator. What they hand over is computed in the sampler's --dtype:
    float64  both compute float64 logits from the same (float32) weights; they differ by ~1e-15 of
             their scale (parity), so a character differs only if a uniform draw lands within ~1e-15 of
             an edge of the cumulative distribution: the same text, to any length one will ever print.
    float32  the default: the logits differ by ~1e-6 of their scale, so the text is the same
             unless a draw lands within that of an edge (or two characters tie within it, for
             temperature 0 or a top-k or top-p cut): we measure one character in 570,000 to one in
             3,000,000 (tests/test_sampling.py measures it along 500 characters).

Shape key: V vocab.
"""
import numpy as np


def sample_next(logits, rng, temperature=1.0, top_k=None, top_p=1.0):
    """logits (V,) -> the next token id.

    temperature 0 is greedy (argmax, and no random number is drawn). Otherwise the logits are divided
    by the temperature; top_k keeps the k most likely tokens (ties go to the lower id); top_p keeps the
    smallest set of most likely tokens whose probability adds up to at least top_p (nucleus sampling,
    Holtzman et al. 2019, arXiv:1904.09751). One uniform number from rng then picks a token by
    inverse CDF over the kept probabilities (pick).
    """
    return pick(logits, None if temperature == 0 else rng.random(), temperature, top_k, top_p)


def pick(logits, u, temperature=1.0, top_k=None, top_p=1.0):
    """sample_next's rule with its uniform number u in [0, 1) drawn already (None for temperature 0)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(logits))
    order = np.argsort(-logits, kind="stable")          # (V,) most likely first
    ranked = logits[order] / temperature                # (V,) descending
    if top_k is not None:
        ranked = ranked[:top_k]
    probs = np.exp(ranked - ranked[0])
    probs /= probs.sum()
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), top_p)) + 1   # first rank where the mass reaches top_p
        probs = probs[:keep]
    cdf = np.cumsum(probs)
    rank = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return int(order[min(rank, len(cdf) - 1)])


def generate(prefill, decode, prompt_ids, max_new_tokens, block_size, rng,
             temperature=1.0, top_k=None, top_p=1.0, use_cache=True):
    """Yield (token, logits it was drawn from) for max_new_tokens new tokens of one sample.

    prefill(ids) runs the model over a window of ids (a list), fills the KV cache and returns the last
    position's logits (V,); decode(token, pos) runs one new position against the cache. The rest is
    generate_batch's, for a batch of one.
    """
    steps = generate_batch(lambda window: prefill(window[0].tolist())[None],
                           lambda tokens, pos: decode(int(tokens[0]), pos)[None],
                           prompt_ids, 1, max_new_tokens, block_size, rng, temperature, top_k, top_p, use_cache)
    for tokens, logits in steps:
        yield int(tokens[0]), logits[0]


def generate_batch(prefill, decode, prompt_ids, num_samples, max_new_tokens, block_size, rng,
                   temperature=1.0, top_k=None, top_p=1.0, use_cache=True):
    """Yield (tokens (N,), logits (N, V) they were drawn from) for max_new_tokens new positions of
    N = num_samples continuations of one prompt, computed together.

    prefill(window) runs the model over a window (N, T) of ids, fills the KV cache and returns the last
    position's logits (N, V); decode(tokens, pos) runs one new position (N,) against the cache.
    use_cache=False calls prefill on the whole window for every token instead: the full recompute.

    Random numbers: sample i takes the i-th max_new_tokens of rng's uniform numbers (none at
    temperature 0), as if the samples were drawn one after the other. So in float64 a batch writes the
    text that N one-sample runs would write in turn; in float32 the batch's size also changes how the
    products round, which can flip a rare near-tie, as a change of backend can.

    Past block_size: positions are learned only up to block_size, so the window slides. When a new
    token does not fit, the window restarts at the last 3/4 of block_size tokens, re-primed by one
    prefill, and caching goes on from there. Once the window has filled, the model thus always sees
    between 3/4 of block_size and block_size tokens of context, and a re-prime costs one forward every
    block_size/4 tokens. All the samples have the same length, so they slide together.
    """
    draws = None if temperature == 0 else rng.random((num_samples, max_new_tokens))
    keep = max(1, block_size * 3 // 4)
    n = len(prompt_ids)
    context = np.zeros((num_samples, n + max_new_tokens), dtype=np.int64)   # (N, all the text)
    context[:, :n] = prompt_ids
    start = max(0, n - block_size)                      # the window is context[:, start:n]
    logits = prefill(context[:, start:n])
    for j in range(max_new_tokens):
        tokens = np.array([pick(row, None if draws is None else draws[i, j], temperature, top_k, top_p)
                           for i, row in enumerate(logits)])
        yield tokens, logits
        context[:, n] = tokens
        n += 1
        if n - start > block_size:                      # the new token does not fit: slide the window
            start = n - keep
            logits = prefill(context[:, start:n])
        elif use_cache:
            logits = decode(tokens, n - start - 1)
        else:
            logits = prefill(context[:, start:n])
