"""The shared .npz weights file: round trip, atomic writes, and a clear error for every bad file."""
import json
import os

import numpy as np
import pytest

from numpy_gpt import GPTConfig, UserError, init_params
from numpy_gpt.machinery.checkpoint import FORMAT, atomic_write, load_weights, save_weights

CONFIG = GPTConfig(vocab_size=5, block_size=6, n_layer=1, n_head=2, n_embd=4)
CHARS = "\nabc!"


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "w.npz"
    save_weights(path, init_params(CONFIG, seed=1), CONFIG, CHARS, meta={"step": 7})
    return path


def rewrite(src, dst, drop=(), change=None):
    """Copy a weights file entry by entry, dropping or replacing some entries."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    arrays.update(change or {})
    np.savez(dst, **arrays)
    return dst


def test_round_trip(saved):
    params, config, chars, meta = load_weights(saved)
    assert config == CONFIG and chars == CHARS and meta == {"step": 7}
    for name, p in init_params(CONFIG, seed=1).items():
        np.testing.assert_array_equal(params[name], p)
        assert params[name].dtype == np.float32


def test_float64_round_trip(tmp_path):
    path = tmp_path / "w64.npz"
    save_weights(path, init_params(CONFIG, seed=2, dtype=np.float64), CONFIG, CHARS)
    assert load_weights(path)[0]["wte.weight"].dtype == np.float64


def test_no_pickled_objects_inside(saved):
    with np.load(saved, allow_pickle=False) as z:          # would raise on any pickled entry
        assert sorted(z.files)[:4] == ["__config__", "__format__", "__meta__", "__vocab__"]
        assert all(z[k].dtype != object for k in z.files)


def test_missing_file(tmp_path):
    # the fix it names needs numpy alone: numpy_gpt.sample may run where torch is not installed
    with pytest.raises(UserError, match="checkpoint not found: .*missing.npz.*python -m numpy_gpt.train"):
        load_weights(tmp_path / "missing.npz")


def test_truncated_file(saved, tmp_path):
    cut = tmp_path / "cut.npz"
    cut.write_bytes(saved.read_bytes()[: os.path.getsize(saved) // 2])
    with pytest.raises(UserError, match="cut.npz is truncated or not a tiny-llm .npz weights file"):
        load_weights(cut)


def test_not_an_npz(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    with pytest.raises(UserError, match="junk.npz is truncated or not a tiny-llm .npz weights file"):
        load_weights(junk)


def test_text_and_bare_npy_files_are_named_for_what_they_are_not(tmp_path):
    """NumPy's own message for a text file advises unpickling it; ours must not pass that on."""
    text, array = tmp_path / "notes.npz", tmp_path / "array.npy"
    text.write_text("hello, not an archive\n")
    np.save(array, np.zeros(3))
    with pytest.raises(UserError) as e:
        load_weights(text)
    assert "no NumPy file at all" in str(e.value) and "allow_pickle" not in str(e.value)
    assert "pickle.load" not in str(e.value)
    with pytest.raises(UserError, match=r"array.npy is .*\(it is one NumPy array, not an .npz archive"):
        load_weights(array)


def test_a_training_state_and_a_weights_file_are_told_apart(saved, tmp_path):
    """kid.pt where weights belong, and weights where kid.pt belongs, each say which file to pass; the
    samplers read either (load_params)."""
    from numpy_gpt.machinery.checkpoint import load_params, load_state, save_state
    params, config, chars, _ = load_weights(saved)
    state = tmp_path / "kid.pt"
    save_state(state, {"params": params, "m": params, "v": params, "step": 3, "adam_step": 3,
                       "config": config.to_dict(), "vocab": chars, "settings": {}, "elapsed_s": 1.0,
                       "tokens_per_s": 1.0, "threads": None, "backend": "numpy_gpt"})
    with pytest.raises(UserError, match="kid.pt is a training state .* pass the kid.npz beside it"):
        load_weights(state)
    with pytest.raises(UserError, match="is a weights file .* not a training state"):
        load_state(saved)
    for path in (saved, state):
        got, got_config, got_chars = load_params(path)
        assert got_config == config and got_chars == chars
        assert all(np.array_equal(got[k], params[k]) for k in params)


def test_foreign_npz(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(UserError, match="is not a tiny-llm weights file"):
        load_weights(foreign)


def test_pickled_object_array_is_refused(saved, tmp_path):
    bad = tmp_path / "pickled.npz"
    arrays = dict(np.load(saved, allow_pickle=False))
    arrays["lm_head.weight"] = np.array([{"evil": 1}], dtype=object)
    np.savez(bad, **arrays)
    with pytest.raises(UserError, match="pickled.npz is truncated or not a tiny-llm .npz weights file .*pickle"):
        load_weights(bad)


def test_missing_tensor(saved, tmp_path):
    bad = rewrite(saved, tmp_path / "bad.npz", drop=["h.0.ln_2.bias"])
    with pytest.raises(UserError, match=r"missing tensors \['h.0.ln_2.bias'\], unexpected tensors none"):
        load_weights(bad)


def test_extra_tensor(saved, tmp_path):
    bad = rewrite(saved, tmp_path / "bad.npz", change={"h.1.ln_1.weight": np.ones(4, np.float32)})
    with pytest.raises(UserError, match=r"missing tensors none, unexpected tensors \['h.1.ln_1.weight'\]"):
        load_weights(bad)


def test_misshaped_tensor(saved, tmp_path):
    bad = rewrite(saved, tmp_path / "bad.npz", change={"wpe.weight": np.zeros((7, 4), np.float32)})
    with pytest.raises(UserError, match=r"tensor wpe.weight has shape \(7, 4\), expected \(6, 4\)"):
        load_weights(bad)


def test_non_finite_tensor(saved, tmp_path):
    w = np.zeros((5, 4), np.float32)
    w[2, 1] = np.nan
    bad = rewrite(saved, tmp_path / "bad.npz", change={"lm_head.weight": w})
    with pytest.raises(UserError, match="tensor lm_head.weight contains NaN or inf"):
        load_weights(bad)


def test_vocabulary_must_match_config(saved, tmp_path):
    bad = rewrite(saved, tmp_path / "bad.npz", change={"__vocab__": np.array([97, 98], np.int32)})
    with pytest.raises(UserError, match="the vocabulary has 2 characters .* vocab_size=5"):
        load_weights(bad)


def test_config_with_unknown_keys(saved, tmp_path):
    cfg = dict(CONFIG.to_dict(), dropout=0.1)
    bad = rewrite(saved, tmp_path / "bad.npz", change={"__config__": np.array(json.dumps(cfg))})
    with pytest.raises(UserError, match="config keys .* do not match"):
        load_weights(bad)


def test_format_string(saved):
    with np.load(saved, allow_pickle=False) as z:
        assert str(z["__format__"]) == FORMAT


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old and complete")

    def fails_halfway(f):
        f.write(b"new but half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, fails_halfway)
    assert path.read_bytes() == b"old and complete"
    assert os.listdir(tmp_path) == ["file.bin"]              # the temporary file is gone too
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["file.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask   # a normal file's mode, not mkstemp's 0600


def test_a_write_that_fails_names_the_file_not_its_temporary(tmp_path):
    """A full disk, or a folder where the file belongs: the message names the file the user asked for,
    and leaves nothing behind."""
    import errno
    path = tmp_path / "kid.npz"

    def disk_full(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError, match=r"cannot write .*kid.npz \(No space left on device\)"):
        atomic_write(path, disk_full)
    assert os.listdir(tmp_path) == []
    path.mkdir()
    with pytest.raises(UserError, match=r"cannot write .*kid.npz \(it is a folder\)") as e:
        atomic_write(path, lambda f: f.write(b"weights"))
    assert ".tmp" not in str(e.value) and os.listdir(tmp_path) == ["kid.npz"] and not os.listdir(path)
