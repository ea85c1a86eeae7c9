"""The files both backends read and write: the weights file (.npz), the training state (OUT/kid.pt),
and atomic file writing.

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

from ..config import GPTConfig
from ..model import param_shapes
from .errors import UserError, open_input

FORMAT = "tiny-llm weights v1"
EXTRA_KEYS = ("__format__", "__config__", "__vocab__", "__meta__")


def atomic_write(path, write):
    """Write a file so that it is either absent, the old version, or complete: never half-written.

    write(f) fills a temporary file in the same folder (a binary file object); it is flushed to disk
    and then renamed over path, which the operating system does in one step.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):              # name the file the user knows, not the temporary one
            what = "it is a folder" if path.is_dir() else e.strerror or str(e)
            raise UserError(f"cannot write {path} ({what}); free or choose a place where it can be written "
                            f"(a folder you may write to, with room)") from None
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


def read_npz(path, read, what, hint, damaged, fix):
    """read(path, z) on the opened .npz, never unpickling. A missing or unreadable file is a UserError
    with `what` and `hint`; one np.load cannot read (truncated, pickled objects) says `damaged`, then `fix`."""
    path = Path(path)
    try:
        with open_input(path, what, hint) as f:
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):     # a bare .npy array
                raise UserError(f"{path} is {damaged} (it is one NumPy array, not an .npz archive); {fix}")
            with z:
                return read(path, z)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        # NumPy's own words here suggest loading the file with pickle, which tiny-llm never does
        why = "it holds pickled Python objects, or is no NumPy file at all" if "pickle" in str(e) else \
            f"{type(e).__name__}: {e}"
        raise UserError(f"{path} is {damaged} ({why}); {fix}") from None


TRAIN_ONE = "train one with `python -m numpy_gpt.train` (or torch_gpt.train) or pass --checkpoint PATH"


def load_weights(path):
    """-> (params, config, chars, meta). Every problem with the file is a UserError naming it."""
    return read_npz(path, _read_weights, "checkpoint", TRAIN_ONE, "truncated or not a tiny-llm .npz weights file",
                    "retrain it or pick another checkpoint")


def load_params(path):
    """-> (params, config, chars) from a weights file or a training state (OUT/kid.pt), whichever path
    holds: what the samplers need. Every problem is a UserError naming the file."""
    def read(path, z):
        if _format(z) == STATE_FORMAT:
            state = _read_state(path, z)
            return state["params"], state["config"], state["vocab"]
        return _read_weights(path, z)[:3]
    return read_npz(path, read, "checkpoint", TRAIN_ONE, "truncated or not a tiny-llm weights file or training state",
                    "retrain it or pick another checkpoint")


def _format(z):
    return str(z["__format__"]) if "__format__" in z.files else None


def _read_weights(path, z):
    files = set(z.files)
    if _format(z) == STATE_FORMAT:
        raise UserError(f"{path} is a training state (kid.pt, which --resume reads), not a weights file; pass "
                        f"the kid.npz beside it, or a snapshot from its checkpoints/ folder")
    if _format(z) != FORMAT:
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


# ------------------------------------------------------------------------------------------------
# the training state: OUT/kid.pt, for --resume, written and read by both trainers

STATE_FORMAT = "tiny-llm training state v2"
STATE_PARTS = ("params", "m", "v")       # the weights and AdamW's two moments, each name -> array
STATE_META = ("step", "adam_step", "config", "vocab", "settings", "elapsed_s", "tokens_per_s", "threads",
              "backend")
STATE_OPTIONAL = ("precision", "run")    # newer than the format: without precision, the run trained in its dtype;
                                         # without run, a --resume goes by its flags alone


def save_state(path, state):
    """Write a training state atomically, as an .npz (whatever the file is called; the trainers call it
    kid.pt, the name the torch trainer's users know).

    state: "params", "m" and "v" (name -> array, every parameter), and the STATE_META entries:
        step         optimizer steps done, which is also the data position (numpy_gpt.data.batch_rng)
        adam_step    AdamW's own step count (the same as step, unless the run began from other weights)
        config       GPTConfig.to_dict(); vocab the characters in id order
        settings     the flags that shape the trajectory (numpy_gpt.machinery.loop.TRAJECTORY_FLAGS)
        elapsed_s, tokens_per_s, threads (the compute threads, or None), backend (who wrote it)
        precision    (optional) "float32", "float64" or "bf16 autocast", with " (compiled)" after it for a
                     torch_gpt --compile run, and " (CUDA graph)" for a step replayed as one
        run          (optional) the run's length and what it measures (numpy_gpt.machinery.cli.RUN_FLAGS): steps,
                     eval_interval, eval_batches, eval_train_batches (positive ints), sample_prompt
    No random-number state is needed: every stream is keyed by (seed, step, micro-batch).
    """
    arrays = {"__format__": np.array(STATE_FORMAT),
              "__meta__": np.array(json.dumps({k: state[k] for k in STATE_META + STATE_OPTIONAL if k in state}))}
    for part in STATE_PARTS:
        for name, a in state[part].items():
            arrays[f"{part}/{name}"] = np.asarray(a)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_state(path):
    """-> the state save_state wrote, with config a GPTConfig. Every problem is a UserError naming it."""
    return read_npz(path, _read_state, "training state", "pass a run's OUT/kid.pt",
                    "truncated, damaged or not a kid.pt training state",
                    "it was not loaded; resume from an intact copy, or start anew with another --out")


def _read_state(path, z):
    files = set(z.files)
    if any(f.endswith("/data.pkl") for f in files):
        raise UserError(f"{path} is a kid.pt from tiny-llm before version 2 (a torch.save file), which this "
                        f"version does not unpickle; finish that run with the older version, or start anew "
                        f"from its weights (OUT/kid.npz or OUT/checkpoints/)")
    if _format(z) == FORMAT:
        raise UserError(f"{path} is a weights file (kid.npz or a snapshot), not a training state; --resume "
                        f"continues a run from the kid.pt in its --out folder")
    if _format(z) != STATE_FORMAT:
        raise UserError(f"{path} is not a kid.pt training state (its __format__ entry is missing or not "
                        f"{STATE_FORMAT!r})")
    meta = json.loads(str(z["__meta__"]))
    missing = [k for k in STATE_META if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it is damaged or from another version")
    try:
        config = GPTConfig.from_dict(meta["config"])
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    if not isinstance(meta["vocab"], str) or len(meta["vocab"]) != config.vocab_size or \
            not isinstance(meta["settings"], dict):
        raise UserError(f"{path}: its vocab does not match vocab_size={config.vocab_size}, or its settings are "
                        f"not a dict; it is damaged or foreign")
    run = meta.get("run", {})
    counts = [run.get(k, 1) for k in ("steps", "eval_interval", "eval_batches", "eval_train_batches")] \
        if isinstance(run, dict) else [0]
    if not all(type(n) is int and n >= 1 for n in counts) or not isinstance(run.get("sample_prompt", ""), str):
        raise UserError(f"{path}: its run settings ({run!r}) are not positive counts and a prompt; it is damaged "
                        f"or foreign")
    shapes = param_shapes(config)
    expected = {f"{part}/{name}" for part in STATE_PARTS for name in shapes} | {"__format__", "__meta__"}
    if files != expected:
        raise UserError(f"{path} does not match its config {config.to_dict()}: missing "
                        f"{sorted(expected - files)[:3] or 'none'}, unexpected {sorted(files - expected)[:3] or 'none'}")
    state = {**meta, "config": config}
    dtype = z["params/wte.weight"].dtype
    for part in STATE_PARTS:
        state[part] = {}
        for name, shape in shapes.items():
            a = z[f"{part}/{name}"]
            if a.shape != shape or a.dtype != dtype or dtype not in (np.float32, np.float64):
                raise UserError(f"{path}: {part}/{name} is {a.dtype} of shape {a.shape}, expected {dtype} "
                                f"(float32 or float64) of shape {shape}")
            if not np.isfinite(a).all():
                raise UserError(f"{path}: {part}/{name} contains NaN or inf")
            state[part][name] = a
    return state
