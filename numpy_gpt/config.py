"""The model's shape, one dataclass shared by numpy_gpt and torch_gpt.

Shape key: B batch, T time, C channels (n_embd), H heads, D head size (C // H), V vocab.
"""
from dataclasses import asdict, dataclass
from math import isqrt

from .machinery.errors import UserError


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65    # V: distinct characters in tinyshakespeare
    block_size: int = 128   # T at most: characters of context
    n_layer: int = 4        # transformer blocks
    n_head: int = 4         # H: attention heads per block
    n_embd: int = 128       # C: width of the residual stream; head size D = C // H

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"config {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            divisors = sorted({d for h in range(1, isqrt(self.n_embd) + 1) if self.n_embd % h == 0
                               for d in (h, self.n_embd // h)})
            raise UserError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                            f"try n_head in {divisors}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Build a config from a dict read out of a checkpoint; anything else, or unknown or missing keys,
        is an error."""
        if not isinstance(d, dict):
            raise UserError(f"the config must be a JSON object of {sorted(cls.__dataclass_fields__)}, "
                            f"got {type(d).__name__} {d!r:.60}")
        names = set(cls.__dataclass_fields__)
        if set(d) != names:
            raise UserError(f"config keys {sorted(d)} do not match {sorted(names)}")
        return cls(**d)
