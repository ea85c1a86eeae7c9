"""The corpus loader, its download, the tokenizer, the split and the batches."""
import io
import urllib.request

import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_gpt import data
from numpy_gpt.machinery import corpus
from numpy_gpt.config import GPTConfig
from numpy_gpt.machinery.errors import UserError
from numpy_gpt.data import CharTokenizer, batch_rng, eval_batches, get_batch, split_train_val
from numpy_gpt.machinery.corpus import load_text
from numpy_gpt.model import init_params

from conftest import corpus_path


def test_tinyshakespeare(corpus):
    text = load_text(corpus)
    tok = CharTokenizer.from_text(text)
    assert len(text) == 1_115_394 and tok.vocab_size == 65
    assert tok.chars == "".join(sorted(set(text))) and tok.chars[0] == "\n"
    train, val = split_train_val(tok.encode(text), 128)
    assert len(train) == 1_003_854 and len(val) == 111_540
    assert tok.decode(train[:13]) == "First Citizen"


@given(st.text(min_size=1, max_size=200))
def test_tokenizer_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == text
    assert list(tok.chars) == sorted(set(text))


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("hello world")
    with pytest.raises(UserError, match=r"2 character\(s\) not in the model's 8-character vocabulary: 'X', 'é'"):
        tok.encode("hello Xé")


def test_default_path_downloads_and_verifies(tmp_path, monkeypatch):
    """With no data/tinyshakespeare.txt, the loader fetches it (here from a fake server) and checks it."""
    monkeypatch.chdir(tmp_path)
    payload = corpus_path().read_bytes()
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    text = load_text()
    assert urls == [corpus.TINYSHAKESPEARE_URL] and "char-rnn" in urls[0]
    assert len(text) == 1_115_394 and (tmp_path / "data" / "tinyshakespeare.txt").read_bytes() == payload
    load_text()                                                   # present now: no second download
    assert len(urls) == 1


def test_download_with_the_wrong_checksum_saves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"not shakespeare"))
    with pytest.raises(UserError, match="sha256 .* expected 86c4e6aa.*nothing was saved"):
        load_text()
    assert not (tmp_path / "data").exists()                       # not even a temporary file


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def offline(url, timeout):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match="could not download tinyshakespeare .*network is unreachable.*--data PATH"):
        load_text()


def test_corrupted_local_copy_is_caught(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text("First Citizen: tampered")
    with pytest.raises(UserError, match="has sha256 .*expected 86c4e6aa.*delete it to download it again"):
        load_text()


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="data file not found: .*nope.txt"):
        load_text(tmp_path / "nope.txt")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text \\(bad byte at offset 3\\)"):
        load_text(path)


def test_any_utf8_file(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("ünïcödé ✓\n" * 50, encoding="utf-8")
    assert CharTokenizer.from_text(load_text(path)).vocab_size == len(set("ünïcödé ✓\n"))


def test_split_too_short():
    with pytest.raises(UserError, match="the val split has 10 characters, fewer than block_size\\+1 = 17"):
        split_train_val(np.arange(100), 16)


def test_batches_are_shifted_windows_and_seeded():
    ids = np.arange(1000)
    x, y = get_batch(ids, 8, 16, batch_rng(7, 3))
    assert x.shape == y.shape == (8, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)                        # the next character
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)           # contiguous windows
    assert y.max() < 1000
    x2, _ = get_batch(ids, 8, 16, batch_rng(7, 3))
    np.testing.assert_array_equal(x, x2)                           # same (seed, step): same batch
    assert not np.array_equal(x, get_batch(ids, 8, 16, batch_rng(7, 4))[0])
    assert not np.array_equal(x, get_batch(ids, 8, 16, batch_rng(7, 3, micro_batch=1))[0])


def test_batches_reach_every_window():
    ids = np.arange(20)
    rng = np.random.default_rng(0)
    starts = {int(get_batch(ids, 1, 4, rng)[0][0, 0]) for _ in range(2000)}
    assert starts == set(range(16))                                # windows 0..N-T-1, none past the end


def test_eval_batches_are_fixed():
    ids = np.arange(500)
    a, b = eval_batches(ids, 3, 4, 8, seed=1), eval_batches(ids, 3, 4, 8, seed=1)
    assert len(a) == 3 and all(np.array_equal(p[0], q[0]) for p, q in zip(a, b))


def test_no_two_random_streams_of_a_run_share_bits():
    """The init, every (step, micro-batch) of the batches and dropout masks, both evaluation splits and
    the samples: each stream's first 64 bits differ from every other's, for several seeds. Untagged
    keys fail this: NumPy pads a short key with zeros, so default_rng(s) is default_rng([s, 0, 0])."""
    assert np.random.default_rng(5).integers(2 ** 63) == np.random.default_rng([5, 0, 0]).integers(2 ** 63)

    def first_bits(rng):
        return int(rng.bit_generator.random_raw())

    for seed in (0, 1, 1337, 2 ** 32 - 1):
        streams = {"init": data.stream(seed, data.INIT), "samples": data.stream(seed, data.SAMPLE)}
        streams.update({f"eval {split}": data.stream(seed, data.EVAL, split) for split in (0, 1)})
        for step in range(0, 60000, 997):
            for micro in (0, 1):
                streams[f"batch {step} {micro}"] = batch_rng(seed, step, micro)
                streams[f"dropout {step} {micro}"] = np.random.default_rng(data.dropout_seed(seed, step, micro))
        bits = {name: first_bits(rng) for name, rng in streams.items()}
        assert len(set(bits.values())) == len(bits)
    # the streams the trainers use are these tagged ones
    config = GPTConfig(vocab_size=3, block_size=2, n_layer=1, n_head=1, n_embd=2)
    assert init_params(config, seed=9)["wte.weight"][0, 0] == np.float32(
        0.02 * data.stream(9, data.INIT).standard_normal())
    np.testing.assert_array_equal(eval_batches(np.arange(500), 1, 4, 8, seed=9, split=1)[0][0],
                                  get_batch(np.arange(500), 4, 8, data.stream(9, data.EVAL, 1))[0])
