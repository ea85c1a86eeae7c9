"""The shared weights file (.npz) that both backends read and write, and atomic file writing.

A weights file holds every parameter under its state_dict() name, plus four entries that are not
tensors: __format__, __config__ (JSON), __vocab__ (the characters as int32 code points, in id order)
and __meta__ (JSON: step, losses, who wrote it). Nothing in it is pickled; it loads with
np.load(..., allow_pickle=False), and loading checks every tensor against the config.
"""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .config import GPTConfig, UserError, open_input
from .model import param_shapes

FORMAT = "tiny-llm weights v1"
EXTRA_KEYS = ("__format__", "__config__", "__vocab__", "__meta__")


def atomic_write(path, write):
    """Write a file so that it is either absent, the old version, or complete: never half-written.

    write(f) fills a temporary file in the same folder (a binary file object); it is flushed to disk
    and then renamed over path, which the operating system does in one step.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)   # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_weights(path, params, config, chars, meta=None):
    """Save parameters (name -> array), the config and the vocabulary (a str) to a .npz, atomically."""
    arrays = {name: np.asarray(p) for name, p in params.items()}
    arrays["__format__"] = np.array(FORMAT)
    arrays["__config__"] = np.array(json.dumps(config.to_dict()))
    arrays["__vocab__"] = np.array([ord(c) for c in chars], dtype=np.int32)
    arrays["__meta__"] = np.array(json.dumps(meta or {}))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_weights(path):
    """-> (params, config, chars, meta). Every problem with the file is a UserError naming it."""
    path = Path(path)
    try:
        with open_input(path, "checkpoint", "train one with `python -m torch_gpt.train` or pass --checkpoint "
                                            "PATH") as f, np.load(f, allow_pickle=False) as z:
            return _read_weights(path, z)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise UserError(f"{path} is truncated or not a tiny-llm .npz weights file ({type(e).__name__}: "
                        f"{e}); retrain it or pick another checkpoint") from None


def _read_weights(path, z):
    files = set(z.files)
    if "__format__" not in files or str(z["__format__"]) != FORMAT:
        raise UserError(f"{path} is not a tiny-llm weights file (its __format__ entry is missing or "
                        f"not {FORMAT!r})")
    missing_extra = [k for k in EXTRA_KEYS if k not in files]
    if missing_extra:
        raise UserError(f"{path} lacks {', '.join(missing_extra)}; it is damaged or foreign")
    try:
        config = GPTConfig.from_dict(json.loads(str(z["__config__"])))
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    chars = vocab_of(path, z["__vocab__"])
    meta = json.loads(str(z["__meta__"]))
    if not isinstance(meta, dict):
        raise UserError(f"{path}: __meta__ must be a JSON object, got {type(meta).__name__}")
    if len(set(chars)) != len(chars) or len(chars) != config.vocab_size:
        raise UserError(f"{path}: the vocabulary has {len(chars)} characters ({len(set(chars))} distinct) "
                        f"but the config says vocab_size={config.vocab_size}")
    shapes = param_shapes(config)
    missing = [n for n in shapes if n not in files]
    unexpected = sorted(files - set(shapes) - set(EXTRA_KEYS))
    if missing or unexpected:
        raise UserError(f"{path} does not match its config {config.to_dict()}: "
                        f"missing tensors {missing or 'none'}, unexpected tensors {unexpected or 'none'}")
    params = {}
    for name, shape in shapes.items():
        p = z[name]
        if p.shape != shape:
            raise UserError(f"{path}: tensor {name} has shape {p.shape}, expected {shape}")
        if p.dtype not in (np.float32, np.float64):
            raise UserError(f"{path}: tensor {name} has dtype {p.dtype}, expected float32 or float64")
        if not np.isfinite(p).all():
            raise UserError(f"{path}: tensor {name} contains NaN or inf")
        params[name] = p
    return params, config, chars, meta


def vocab_of(path, codes):
    """__vocab__, the characters' code points in id order -> the vocabulary as a str."""
    if codes.ndim != 1 or codes.dtype.kind not in "iu" or not all(
            0 <= c <= 0x10FFFF and not 0xD800 <= c <= 0xDFFF for c in codes.tolist()):
        raise UserError(f"{path}: __vocab__ must be a list of Unicode code points (integers), got "
                        f"{codes.dtype} of shape {codes.shape}; the file is damaged or foreign")
    return "".join(map(chr, codes.tolist()))
