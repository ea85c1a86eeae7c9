"""The model's shape, shared by numpy_gpt and torch_gpt, and the error users can fix.

Shape key: B batch, T time, C channels (n_embd), H heads, D head size (C // H), V vocab.
"""
from dataclasses import asdict, dataclass


class UserError(Exception):
    """Something the user can fix: a bad flag, file or prompt.

    The commands print it as one line, `error: <message>`, and exit non-zero without a traceback.
    """


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
            raise UserError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_head in {[h for h in range(1, self.n_embd + 1) if self.n_embd % h == 0]}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Build a config from a dict read out of a checkpoint; unknown or missing keys are an error."""
        names = set(cls.__dataclass_fields__)
        if set(d) != names:
            raise UserError(f"config keys {sorted(d)} do not match {sorted(names)}")
        return cls(**d)
