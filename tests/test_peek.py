"""python -m peek show and export: the numbers are numpy_gpt's own, checked independently here; the
figures are real PNGs; any checkpoint works; bad input and broken exports get one clear line."""
import json
import os
import zlib

import numpy as np
import pytest

from numpy_gpt.machinery.checkpoint import load_weights, save_weights
from numpy_gpt.config import GPTConfig
from numpy_gpt.machinery.errors import UserError
from numpy_gpt.model import gpt_forward, init_params
from peek import analysis
from peek.export import build_export, load_export, write_export

from conftest import ROOT, numeric_grad
from test_numpy_cli import SMALL, assert_user_error, run

CHARS = "\n !',.:;?ADEMORTabdehilmnorstuy"


def random_kid(config, seed=0, dtype=np.float64):
    """Weights far from the init: LayerNorm and biases away from 1 and 0, so nothing cancels trivially."""
    params = init_params(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for name, p in params.items():
        p += (0.3 if p.ndim == 1 else 0.1) * rng.standard_normal(p.shape).astype(dtype)
    return params


@pytest.fixture
def small_kid(tmp_path):
    """A non-default shape with the vocabulary of CHARS, saved as a weights file."""
    config = GPTConfig(vocab_size=len(CHARS), block_size=16, n_layer=2, n_head=2, n_embd=12)
    path = tmp_path / "small.npz"
    save_weights(path, random_kid(config), config, CHARS, meta={"step": 7})
    return path


def test_predictions_and_attention_are_numpy_gpts(small_kid):
    params, config, chars, _ = load_weights(small_kid)
    params = {k: v.astype(np.float64) for k, v in params.items()}
    prompt = "ROMEO: the"
    view = analysis.prompt_view(params, config, chars, prompt)
    ids = np.array([[chars.index(c) for c in prompt]])
    logits, _, cache = gpt_forward(params, config, ids)
    z = logits[0] - logits[0].max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)                 # softmax, written out here
    assert np.abs(np.array(view["probs"]) - probs).max() < 1e-15
    assert np.allclose(np.array(view["probs"]).sum(axis=1), 1, atol=1e-12, rtol=0)
    for t, top in enumerate(view["top"]):
        assert [j for j, _ in top] == list(np.argsort(-probs[t], kind="stable")[:5])
    known = [float(-np.log(probs[t, ids[0, t + 1]])) for t in range(len(prompt) - 1)]
    assert np.allclose(view["losses"][:-1], known, rtol=1e-12, atol=0) and view["losses"][-1] is None
    att = np.array(view["attention"])                                         # (L, H, T, T)
    for l in range(config.n_layer):
        assert np.array_equal(att[l], cache[f"h.{l}.attn"][3][0])                 # q, k, v, att
    assert np.allclose(att.sum(axis=-1), 1, atol=1e-12, rtol=0)
    assert np.all(np.triu(att, k=1) == 0)                                     # nothing from the future
    assert np.array_equal(view["strongest"], att.argmax(axis=-1))


def test_gradient_view_equals_finite_differences(small_kid):
    params, config, chars, _ = load_weights(small_kid)
    params = {k: v.astype(np.float64) for k, v in params.items()}
    prompt = "MEET: a"
    view = analysis.prompt_view(params, config, chars, prompt)
    ids = np.array([[chars.index(c) for c in prompt]])
    x, y = ids[:, :-1], ids[:, 1:]

    def loss():
        return gpt_forward(params, config, x, y)[1]

    # position t's input is x[t] = wte[ids[t]] + wpe[t]; moving wpe[t] moves x[t] alone
    numeric = numeric_grad(loss, params["wpe.weight"])                        # (P, C)
    expected = np.linalg.norm(numeric[:len(prompt)], axis=1)
    got = np.array(view["gradients"]["inputs"])
    assert got[-1] == 0 and expected[-1] < 1e-9                              # the last one feeds no target
    assert np.abs(got - expected).max() < 1e-6 * expected.max(), (got, expected)
    norms = dict(view["gradients"]["params"])
    for name in ("ln_f.bias", "h.1.attn.c_proj.bias", "h.0.ln_1.weight"):
        fd = np.linalg.norm(numeric_grad(loss, params[name]))
        assert abs(norms[name] - fd) < 1e-6 * fd, name
    values = [n for _, n in view["gradients"]["params"]]
    assert values == sorted(values, reverse=True) and len(values) == len(params)
    assert view["gradients"]["loss"] == pytest.approx(loss(), rel=1e-12)


def test_embedding_views():
    rng = np.random.default_rng(3)
    wte = rng.standard_normal((9, 6))
    wte[4] = 2.5 * wte[1] + 0.01 * rng.standard_normal(6)                    # 4's nearest must be 1
    near = analysis.nearest_characters(wte, k=3)
    assert near[4][0][0] == 1 and near[4][0][1] > 0.99
    unit = wte / np.linalg.norm(wte, axis=1, keepdims=True)
    for i, row in enumerate(near):
        assert i not in [j for j, _ in row]
        cos = [c for _, c in row]
        assert cos == sorted(cos, reverse=True)
        assert np.allclose(cos, [unit[i] @ unit[j] for j, _ in row], atol=1e-12)
    coords, explained = analysis.embedding_pca(wte)
    centred = wte - wte.mean(axis=0)
    eig = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]             # the covariance's spectrum
    assert np.allclose((coords ** 2).sum(axis=0), eig[:2], rtol=1e-10)       # the two largest variances
    assert np.allclose(explained, eig[:2] / eig.sum(), rtol=1e-10)
    assert abs(coords[:, 0] @ coords[:, 1]) < 1e-9                            # orthogonal axes
    sims = analysis.neighbour_similarity(wte)
    assert np.allclose(sims, [unit[t] @ unit[t + 1] for t in range(8)], atol=1e-12)


def test_export_round_trip_and_schema(small_kid, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "train_loss": 4 - s / 10, "val_loss": 4.1 - s / 10,
                                       "elapsed_s": s, "sample": "ROMEO: x"}) + "\n" for s in (10, 0, 5)))
    text = (CHARS * 40)[::-1]
    data, params, config, chars = build_export(small_kid, prompt="DREAM", text=text, corpus_name="t.txt")
    write_export(tmp_path / "export", data, params, config, chars)
    loaded, weights = load_export(tmp_path / "export")
    assert loaded == json.loads(json.dumps(data))
    assert [e["step"] for e in loaded["log"]] == [0, 5, 10]                  # found beside the checkpoint
    assert loaded["vocab"]["counts"] == [text.count(c) for c in CHARS]
    assert loaded["passage"]["text"] == text[int(0.9 * len(text)):][:16]
    original = load_weights(small_kid)[0]
    assert all(np.array_equal(weights[k], original[k].astype(np.float32)) for k in original)
    raw = (tmp_path / "export" / "weights.bin").read_bytes()
    manifest = json.loads((tmp_path / "export" / "weights.json").read_text())
    for t in manifest["tensors"]:                                             # readable without numpy_gpt
        blob = raw[t["offset"]:t["offset"] + 4 * t["length"]]
        assert zlib.crc32(blob) == t["crc32"]
        assert np.array_equal(np.frombuffer(blob, "<f4").reshape(t["shape"]), weights[t["name"]])


def break_json(folder, change):
    data = json.loads((folder / "peek.json").read_text())
    change(data)
    (folder / "peek.json").write_text(json.dumps(data))


def point_weights_at(folder, name):
    """weights.json's file names another file than the weights.bin beside it."""
    manifest = json.loads((folder / "weights.json").read_text())
    (folder / "weights.json").write_text(json.dumps({**manifest, "file": name}))


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "peek.json").write_text((f / "peek.json").read_text()[:-100]), "not valid JSON"),
    (lambda f: (f / "peek.json").unlink(), "no export at"),
    (lambda f: break_json(f, lambda d: d.update(version=99)), "version 99"),
    (lambda f: break_json(f, lambda d: d["prompt"]["attention"][0][0].pop()), "prompt.attention is not"),
    (lambda f: break_json(f, lambda d: d["prompt"]["attention"][1][0][2].__setitem__(0, 0.5)),
     "does not sum to 1"),
    (lambda f: break_json(f, lambda d: d["embedding"].pop("pca")), "KeyError 'pca'"),
    (lambda f: break_json(f, lambda d: d["vocab"].update(chars="abc")), "vocab.chars"),
    (lambda f: (f / "weights.bin").write_bytes((f / "weights.bin").read_bytes()[:-8]), "truncated"),
    (lambda f: (f / "weights.bin").write_bytes(b"\x01" + (f / "weights.bin").read_bytes()[1:]), "sha256"),
    (lambda f: (f / "weights.json").write_text("{"), "weights.json is not valid JSON"),
    (lambda f: point_weights_at(f, "../kid.npz"), "must name a file beside it"),
    (lambda f: point_weights_at(f, "/etc/passwd"), "must name a file beside it"),
])
def test_a_broken_export_is_named(small_kid, tmp_path, damage, message):
    folder = tmp_path / "export"
    write_export(folder, *build_export(small_kid, prompt="DREAM"))
    load_export(folder)
    damage(folder)
    with pytest.raises(UserError, match=message):
        load_export(folder)


def test_figures_are_readable_pngs(small_kid, tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 0, "train_loss": 3.5, "val_loss": 3.6}\n'
                                        '{"step": 9, "train_loss": 2.5, "val_loss": 2.9}\n')
    figures = tmp_path / "figures"
    result = run("-m", "peek", "show", "--checkpoint", str(small_kid), "--prompt", "ROMEO: a",
                 "--figures", str(figures))
    assert result.returncode == 0, result.stderr
    import matplotlib.image
    names = ["attention.png", "embedding.png", "loss.png", "positions.png", "predictions.png"]
    assert sorted(p.name for p in figures.iterdir()) == names
    for name in names:
        image = matplotlib.image.imread(figures / name)                      # (height, width, RGBA)
        height, width = image.shape[:2]
        assert 300 <= height <= 2000 and 500 <= width <= 2000, (name, image.shape)
        assert image[..., :3].std() > 0.05, f"{name} is blank"


def test_show_prints_every_part(small_kid):
    result = run("-m", "peek", "show", "--checkpoint", str(small_kid), "--prompt", "ROMEO: a")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    params, config, chars, _ = load_weights(small_kid)
    total = sum(p.size for p in params.values())
    for part in ("Parameters", "Vocabulary: 31 characters", "Nearest characters", "Positions",
                 "Next-character predictions for 'ROMEO: a'", "Attention", "Gradients", f"{total:,}",
                 "lm_head.weight", "L1 H1"):
        assert part in out, part
    assert "Training" not in out                                              # no log beside it


def tiny_text_without_romeo(tmp_path):
    """Another vocabulary: lower case and punctuation only, so ROMEO: cannot be the prompt."""
    rng = np.random.default_rng(0)
    words = ["the", "kid", "writes", "small", "words", "and", "stops", "here", "then", "again"]
    text = "".join(" ".join(rng.choice(words, 8)) + (",\n" if i % 3 else ".\n") for i in range(400))
    path = tmp_path / "other.txt"
    path.write_text(text)
    return path


def test_any_checkpoint(tmp_path, corpus):
    """A snapshot from a torch_gpt run's checkpoints/, a numpy_gpt kid of another vocabulary and shape."""
    small = tmp_path / "shakespeare.txt"
    small.write_text(corpus.read_text(encoding="utf-8")[:8000])
    out = tmp_path / "torch-run"
    result = run("-m", "torch_gpt.train", "--device", "cpu", "--data", str(small), "--out", str(out),
                 *SMALL, "--steps", "4", "--eval-interval", "2")
    assert result.returncode == 0, result.stderr
    shown = run("-m", "peek", "show", "--checkpoint", str(out / "checkpoints" / "step_00002.npz"))
    assert shown.returncode == 0, shown.stderr
    assert "step_00002.npz, step 2" in shown.stdout
    assert "Training" in shown.stdout and "val loss" in shown.stdout and "at its last evaluation, step 4" in shown.stdout    # the run's log, one folder up

    other = tmp_path / "numpy-run"
    result = run("-m", "numpy_gpt.train", "--data", str(tiny_text_without_romeo(tmp_path)), "--out", str(other),
                 "--steps", "3", "--eval-interval", "3", "--n-layer", "3", "--n-head", "3", "--n-embd", "9",
                 "--block-size", "12", "--batch-size", "4", "--eval-batches", "2", "--eval-train-batches", "2")
    assert result.returncode == 0, result.stderr
    shown = run("-m", "peek", "show", "--checkpoint", str(other / "kid.npz"))
    assert shown.returncode == 0, shown.stderr
    visible = "".join(c for c in sorted(set((tmp_path / "other.txt").read_text())) if not c.isspace())
    assert f"Next-character predictions for {visible[:8]!r}" in shown.stdout    # its own default prompt
    assert "L2 H2" in shown.stdout
    exported = run("-m", "peek", "export", "--checkpoint", str(other / "kid.npz"), "--out", str(tmp_path / "e"),
                   "--data", str(tmp_path / "other.txt"))
    assert exported.returncode == 0, exported.stderr
    data, _ = load_export(tmp_path / "e")
    assert data["config"]["n_layer"] == 3 and data["vocab"]["counts"] is not None and data["log"]


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint", "missing/kid.npz"], "checkpoint not found: missing/kid.npz"),
    (["--prompt", "ROMEO: zebra fx"], "3 character(s) not in the model's 31-character vocabulary: 'f', 'x', 'z'"),
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "MEET " * 4], "more than the model's context of 16"),
    (["--log", "nowhere/log.jsonl"], "log not found"),
    (["--data", "nowhere.txt"], "data file not found"),
])
@pytest.mark.parametrize("command", ["show", "export"])
def test_bad_input_gets_one_line(small_kid, tmp_path, command, flags, message):
    if "--checkpoint" not in flags:
        flags = ["--checkpoint", str(small_kid), *flags]
    extra = ["--out", str(tmp_path / "e")] if command == "export" else []
    assert_user_error(run("-m", "peek", command, *flags, *extra), message)
    assert not (tmp_path / "e").exists()


def test_help_and_no_torch(tmp_path, small_kid):
    for command in ("show", "export"):
        result = run("-m", "peek", command, "--help")
        assert result.returncode == 0 and "--checkpoint" in result.stdout
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=f"{fake}{os.pathsep}{ROOT}")
    result = run("-m", "peek", "show", "--checkpoint", str(small_kid), env=env)
    assert result.returncode == 0, result.stderr


def test_an_export_that_cannot_finish_writes_none_of_its_files(small_kid, tmp_path):
    """A folder where peek.json belongs: the weights are not written either (an export is three files
    that must match), and nothing temporary is left."""
    folder = tmp_path / "export"
    (folder / "peek.json").mkdir(parents=True)
    with pytest.raises(UserError, match="peek.json is a folder in the way"):
        write_export(folder, *build_export(small_kid, prompt="DREAM"))
    assert sorted(p.name for p in folder.iterdir()) == ["peek.json"]
