"""out/kid.pt: the full training state, loadable with torch.load(weights_only=True), never unpickled.

It holds the model and optimizer state, the step (which is also the data position: the batches of
step s come from numpy_gpt.data.batch_rng(seed, s, micro_batch)), torch's random-number states, the
config, the vocabulary and the settings that shape the trajectory, so a resumed run ends with the
same weights as one that never stopped. Newer files also hold the CPU thread count of the run (a
resume at another count is not bit-identical, and says so) and its last tokens/s.
"""
import pickle
import zipfile
from pathlib import Path

import torch

from numpy_gpt.checkpoint import atomic_write
from numpy_gpt.config import GPTConfig, UserError, open_input

FORMAT = "tiny-llm kid.pt v1"
KEYS = ("format", "step", "model", "optimizer", "config", "vocab", "settings", "rng", "elapsed_s")


def save_kid(path, state):
    """Write a training state dict (the KEYS above) atomically."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_kid(path):
    """-> the state dict, on the CPU. Missing, truncated and foreign files are UserErrors."""
    path = Path(path)
    try:
        with open_input(path, "checkpoint", "pass the kid.pt of a run (OUT/kid.pt) or a .npz weights file") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is truncated, damaged or not a kid.pt checkpoint ({first_line}); "
                        f"it was not loaded") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a tiny-llm kid.pt checkpoint (no format entry {FORMAT!r})")
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it is damaged or from another version")
    try:
        state["config"] = GPTConfig.from_dict(state["config"])
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    if not isinstance(state["vocab"], str) or not isinstance(state["settings"], dict):
        raise UserError(f"{path}: its vocab is not a string or its settings not a dict; it is damaged or foreign")
    return state
