"""The weights as a page reads them: one little-endian float32 binary and a JSON manifest.

    weights.bin    every parameter, in state_dict() order, as little-endian float32, back to back
    weights.json   {"format", "version", "config", "vocab", "file", "bytes", "sha256",
                    "tensors": [{"name", "shape", "offset", "length", "crc32"}, ...]}

offset is in bytes from the start of weights.bin, length in float32 values. crc32 (zlib's, of the
tensor's bytes) is a checksum a page can compute in a few lines of JavaScript; sha256 covers the
whole file for Python. A page loads the file with one fetch and reads each tensor as a
Float32Array(buffer, offset, length): no parsing library is needed.
"""
import hashlib
import json
import zlib
from pathlib import Path

import numpy as np

from numpy_gpt.machinery.checkpoint import atomic_write
from numpy_gpt.config import GPTConfig
from numpy_gpt.machinery.errors import UserError
from numpy_gpt.model import param_shapes

FORMAT, VERSION = "tiny-llm peek weights", 1
LE_FLOAT32 = np.dtype("<f4")


def write_weights(folder, params, config, chars):
    """Write weights.bin and weights.json into folder -> the manifest (a dict)."""
    folder = Path(folder)
    blobs, tensors, offset = [], [], 0
    for name, shape in param_shapes(config).items():
        blob = np.ascontiguousarray(params[name], dtype=LE_FLOAT32).tobytes()
        tensors.append({"name": name, "shape": list(shape), "offset": offset,
                        "length": int(np.prod(shape)), "crc32": zlib.crc32(blob)})
        blobs.append(blob)
        offset += len(blob)
    data = b"".join(blobs)
    manifest = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "vocab": chars,
                "file": "weights.bin", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "tensors": tensors}
    atomic_write(folder / "weights.bin", lambda f: f.write(data))
    atomic_write(folder / "weights.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest


def read_weights(folder):
    """-> (params as float32 arrays, config, chars, manifest). Every problem is a UserError naming the file."""
    folder = Path(folder)
    manifest_path = folder / "weights.json"
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{manifest_path} is not a {FORMAT!r} manifest; run `python -m peek export` again")
    if manifest.get("version") != VERSION:
        raise UserError(f"{manifest_path} is version {manifest.get('version')!r}, this peek reads version "
                        f"{VERSION}; run `python -m peek export` again")
    try:
        config = GPTConfig.from_dict(manifest["config"])
        chars = manifest["vocab"]
        tensors = {t["name"]: t for t in manifest["tensors"]}
        file_name, size, sha = manifest["file"], manifest["bytes"], manifest["sha256"]
    except (KeyError, TypeError) as e:
        raise UserError(f"{manifest_path} lacks or misshapes {e}; run `python -m peek export` again") from None
    if not isinstance(chars, str) or len(chars) != config.vocab_size:
        raise UserError(f"{manifest_path}: the vocabulary is not a string of vocab_size={config.vocab_size} characters")
    if not isinstance(file_name, str) or file_name in ("", ".", "..") or Path(file_name).name != file_name \
            or "\\" in file_name:
        raise UserError(f"{manifest_path}: its file must name a file beside it (weights.bin), got "
                        f"{file_name!r}; run `python -m peek export` again")
    bin_path = folder / file_name
    try:
        data = bin_path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {bin_path} ({e.strerror}); run `python -m peek export` again") from None
    if len(data) != size:
        raise UserError(f"{bin_path} has {len(data):,} bytes, its manifest says {size:,}: it is truncated or "
                        f"from another export")
    if hashlib.sha256(data).hexdigest() != sha:
        raise UserError(f"{bin_path} does not match the sha256 in {manifest_path}: it is corrupt or from "
                        f"another export")
    params = {}
    for name, shape in param_shapes(config).items():
        t = tensors.get(name)
        if t is None or list(t.get("shape", ())) != list(shape):
            raise UserError(f"{manifest_path}: tensor {name} is missing or not of shape {list(shape)}")
        nbytes = 4 * t["length"]
        blob = data[t["offset"]:t["offset"] + nbytes]
        if t["length"] != int(np.prod(shape)) or len(blob) != nbytes or zlib.crc32(blob) != t["crc32"]:
            raise UserError(f"{bin_path}: tensor {name} fails its length or crc32 check")
        params[name] = np.frombuffer(blob, dtype=LE_FLOAT32).reshape(shape).astype(np.float32)
    return params, config, chars, manifest


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found; write it with `python -m peek export`") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); it is truncated or corrupt: export again") from None
