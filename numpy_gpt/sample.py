"""python -m numpy_gpt.sample: write text with the kid from kid.npz or kid.pt, in NumPy alone.

The KV cache makes each new character cost one position's forward (numpy_gpt.model.gpt_decode).
"""
import numpy as np

from .data import CharTokenizer
from .machinery.checkpoint import load_params
from .machinery.cli import check_sampling_args, run_cli, sampling_parser, stream_samples
from .machinery.threaded import one_blas_thread
from .model import gpt_decode, gpt_prefill, new_kv_cache


def parser():
    return sampling_parser("python -m numpy_gpt.sample", "Sample text from a trained kid with numpy_gpt "
                           "(reads kid.npz, or the training state kid.pt).")


def main(argv=None):
    args = check_sampling_args(parser().parse_args(argv))
    params, config, chars = load_params(args.checkpoint)
    params = {name: p.astype(args.dtype) for name, p in params.items()}

    def sampler(n):
        """(prefill, decode) for n samples at once, over a fresh KV cache"""
        kv = new_kv_cache(params, config, batch_size=n)
        return (lambda window: gpt_prefill(params, config, window, kv),
                lambda tokens, pos: gpt_decode(params, config, tokens, pos, kv))

    with one_blas_thread():
        stream_samples(args, sampler, CharTokenizer(chars), config.block_size, np.random.default_rng(args.seed))
    return 0


if __name__ == "__main__":
    run_cli(main)
