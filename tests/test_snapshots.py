"""peek.snapshots: a run's snapshots seen from inside (embedding map, one layer's attention, head habits, losses),
from a real numpy_gpt run with several snapshots and from one with a single snapshot; bad runs get one clear
line; the export carries them, and its check refuses a misshapen one."""
import json

import numpy as np
import pytest

from numpy_gpt.machinery.checkpoint import load_weights, save_weights
from numpy_gpt.config import GPTConfig
from numpy_gpt.machinery.errors import UserError
from numpy_gpt.model import gpt_forward, init_params
from peek import analysis, snapshots
from peek.export import build_export, load_export, passage_of, write_export
from peek.habits import habits_for_kid, val_ids

from conftest import corpus_path
from test_numpy_cli import SMALL, assert_user_error, run


@pytest.fixture(scope="module")
def text():
    return corpus_path().read_text(encoding="utf-8")[:8000]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, text):
    """numpy_gpt.train for 6 steps, evaluating every 2: snapshots at steps 0, 2, 4 and 6, log.jsonl, kid.npz."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "small.txt").write_text(text, encoding="utf-8")
    result = run("-m", "numpy_gpt.train", "--data", str(folder / "small.txt"), "--out", str(folder / "out"),
                 *SMALL, "--steps", "6", "--eval-interval", "2", "--lr", "1e-2")
    assert result.returncode == 0, result.stderr
    return folder / "out"


def test_several_snapshots_from_a_real_run(real_run, text):
    views = snapshots.snapshot_views(real_run, text)
    log = {e["step"]: e for e in map(json.loads, (real_run / "log.jsonl").read_text().splitlines())}
    assert [v["step"] for v in views["snapshots"]] == [0, 2, 4, 6]
    prompt = passage_of(text, min(snapshots.PROMPT_LENGTH, 16))             # block_size 16
    assert views["prompt"]["text"] == prompt and views["layer"] == 0
    for v in views["snapshots"]:
        path = real_run / "checkpoints" / f"step_{v['step']:05d}.npz"
        params, config, chars, _ = load_weights(path)
        params = {k: p.astype(np.float64) for k, p in params.items()}
        assert (v["train_loss"], v["val_loss"]) == (log[v["step"]]["train_loss"], log[v["step"]]["val_loss"])
        # the attention is numpy_gpt's for the prompt, rounded to 3 decimals
        cache = gpt_forward(params, config, np.array([views["prompt"]["ids"]]))[-1]
        assert views["prompt"]["ids"] == [chars.index(c) for c in prompt]
        assert np.abs(np.array(v["attention"]) - cache["h.0.attn"][3][0]).max() <= 0.5e-3 + 1e-12
        assert v["habits"] == habits_for_kid(params, config, chars, val_ids(text, chars))
        # the map is wte's principal axes, up to the order and signs the alignment chose
        coords, explained = analysis.embedding_pca(params["wte.weight"])
        pca = np.array(v["embedding"]["pca"])
        order = [0, 1] if np.isclose(v["embedding"]["explained"][0], explained[0], atol=1e-4) else [1, 0]
        assert np.allclose(v["embedding"]["explained"], explained[order], atol=0.5e-4)
        assert np.allclose(np.abs(pca), np.abs(np.round(coords[:, order], 4)), atol=1e-9)
    last = analysis.embedding_pca(load_weights(real_run / "kid.npz")[0]["wte.weight"].astype(np.float64))[0]
    assert np.allclose(views["snapshots"][-1]["embedding"]["pca"], np.round(last, 4), atol=1e-9)   # the export's map
    maps = [np.array(v["embedding"]["pca"]) for v in views["snapshots"]]
    for a, b in zip(maps, maps[1:]):                                         # no axis flips between neighbours
        assert ((a * b).sum(axis=0) >= 0).all()


def test_one_snapshot_without_a_log_or_text(tmp_path):
    config = GPTConfig(vocab_size=5, block_size=8, n_layer=2, n_head=2, n_embd=8)
    save_weights(tmp_path / "checkpoints" / "step_00300.npz", init_params(config, seed=3), config, "abcde")
    views = snapshots.snapshot_views(tmp_path, layer=1)
    [v] = views["snapshots"]
    assert v["step"] == 300 and v["train_loss"] is None and v["val_loss"] is None and v["habits"] is None
    assert views["prompt"] == {"text": "abcde", "ids": [0, 1, 2, 3, 4]} and views["layer"] == 1
    assert np.array(v["attention"]).shape == (2, 5, 5)
    assert views == snapshots.snapshot_views(tmp_path / "checkpoints", layer=1)   # the checkpoints folder itself


def test_align_undoes_a_swap_and_flips():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((30, 2))
    moved = ref[:, ::-1] * [-1.0, 1.0] + 0.05 * rng.standard_normal((30, 2))   # axes swapped, one flipped
    coords, explained = snapshots.align(moved, np.array([0.3, 0.2]), ref)
    assert np.abs(coords - ref).max() < 0.3 and list(explained) == [0.2, 0.3]
    coords, explained = snapshots.align(-ref, np.array([0.3, 0.2]), ref)      # both flipped, no swap
    assert np.array_equal(coords, ref) and list(explained) == [0.3, 0.2]


@pytest.mark.parametrize("n, expected", [(3, [0, 1, 2]), (11, list(range(11))),
                                         (21, list(range(0, 21, 2))), (501, list(range(0, 501, 50)))])
def test_at_most_11_snapshots_spread_evenly(n, expected):
    assert [s for s, _ in snapshots.spread([(i, None) for i in range(n)])] == expected


def test_snapshots_up_to_the_checkpoints_step(real_run, text):
    views = snapshots.snapshot_views(real_run, text, up_to=3)
    assert [v["step"] for v in views["snapshots"]] == [0, 2]


def test_the_export_carries_snapshots_and_habits(real_run, text, tmp_path):
    data, params, config, chars = build_export(real_run / "checkpoints" / "step_00004.npz", text=text)
    assert [v["step"] for v in data["snapshots"]["snapshots"]] == [0, 2, 4]      # up to its own step
    write_export(tmp_path / "e", data, params, config, chars)
    loaded, _ = load_export(tmp_path / "e")
    assert loaded["habits"] == habits_for_kid(params, config, chars, val_ids(text, chars))
    assert loaded["snapshots"] == json.loads(json.dumps(data["snapshots"]))
    no_text, *_ = build_export(real_run / "kid.npz", with_snapshots=False)
    assert no_text["habits"] is None and no_text["snapshots"] is None


def break_snapshot(data, change):
    change(data["snapshots"]["snapshots"][-1])


@pytest.mark.parametrize("change, message", [
    (lambda v: v["attention"][0].pop(), r"attention is not \(2, 16, 16\)"),
    (lambda v: v["attention"][1][3].__setitem__(0, 0.5), "does not sum to 1"),
    (lambda v: v["embedding"]["pca"].pop(), "embedding.pca is not"),
    (lambda v: v.__setitem__("step", 1), "increasing order"),
    (lambda v: v["habits"][0][1].__setitem__("label", "sleeps"), r"habits\[0\]\[1\] is not layer 0, head 1"),
])
def test_a_misshapen_snapshot_is_named(real_run, text, tmp_path, change, message):
    folder = tmp_path / "e"
    write_export(folder, *build_export(real_run / "kid.npz", text=text))
    data = json.loads((folder / "peek.json").read_text())
    break_snapshot(data, change)
    (folder / "peek.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        load_export(folder)


def test_bad_runs_get_one_clear_line(tmp_path, real_run):
    with pytest.raises(UserError, match="is not a folder; pass a run's --out folder"):
        snapshots.snapshot_views(tmp_path / "nowhere")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(UserError, match="no snapshots in .*empty/checkpoints"):
        snapshots.snapshot_views(tmp_path / "empty")
    with pytest.raises(UserError, match="layer 5 does not exist: the model has layers 0 to 0"):
        snapshots.snapshot_views(real_run, layer=5)
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    good = (real_run / "checkpoints" / "step_00000.npz").read_bytes()
    (broken / "checkpoints" / "step_00000.npz").write_bytes(good)
    (broken / "checkpoints" / "step_00002.npz").write_bytes(good[:len(good) // 2])
    with pytest.raises(UserError, match="step_00002.npz is truncated or not a tiny-llm .npz weights file"):
        snapshots.snapshot_views(broken)
    other = GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=4)
    save_weights(broken / "checkpoints" / "step_00002.npz", init_params(other), other, "abcde")
    with pytest.raises(UserError, match="step_00002.npz is a snapshot of another model"):
        snapshots.snapshot_views(broken)


def test_peek_export_refuses_a_broken_snapshot_in_one_line(real_run, tmp_path):
    run_copy = tmp_path / "out"
    (run_copy / "checkpoints").mkdir(parents=True)
    for p in (real_run / "checkpoints").iterdir():
        (run_copy / "checkpoints" / p.name).write_bytes(p.read_bytes())
    (run_copy / "kid.npz").write_bytes((real_run / "kid.npz").read_bytes())
    (run_copy / "checkpoints" / "step_00004.npz").write_bytes(b"not an npz")
    result = run("-m", "peek", "export", "--checkpoint", str(run_copy / "kid.npz"), "--out", str(tmp_path / "e"))
    assert_user_error(result, "step_00004.npz is truncated or not a tiny-llm .npz weights file")
    assert not (tmp_path / "e").exists()
