"""python -m torch_gpt.train: it learns, stops on a signal from outside and resumes bit-identically, writes
loadable files, and says clearly what is wrong. What both trainers share (numpy_gpt.machinery.loop) is tested in
test_loop.py."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from numpy_gpt import gpt_forward
from numpy_gpt.machinery.checkpoint import load_state, load_weights, save_state
from parity.compare import TOLERANCE
from torch_gpt.model import GPT

from conftest import ROOT, corpus_path
from test_numpy_cli import SMALL, assert_user_error, run

TRAIN = ["-m", "torch_gpt.train", "--device", "cpu"]


def train(text, out, *flags):
    return run(*TRAIN, "--data", str(text), "--out", str(out), *SMALL, *flags)


def start_training(text, out, *flags, **popen):
    """The trainer as a background process, one thread, to be stopped or killed by the test."""
    return subprocess.Popen([sys.executable, *TRAIN, "--data", str(text), "--out", str(out), *SMALL, *flags],
                            cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), text=True, **popen)


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def same_weights(a, b):
    pa, pb = load_weights(a)[0], load_weights(b)[0]
    return all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_help():
    result = run("-m", "torch_gpt.train", "--help")
    assert result.returncode == 0
    for flag in ("--steps", "--batch-size", "--lr", "--seed", "--data", "--out", "--eval-interval", "--device",
                 "--compile", "--resume", "--grad-accum"):
        assert flag in result.stdout


def test_training_cuts_the_loss_and_writes_every_artifact(small_text, tmp_path):
    out = tmp_path / "run"
    result = train(small_text, out, "--steps", "40", "--eval-interval", "20", "--lr", "1e-2")
    assert result.returncode == 0, result.stderr
    log = read_log(out)
    assert [e["step"] for e in log] == [0, 20, 40]
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 0.5 and log[-1]["val_loss"] < log[0]["val_loss"] - 0.3
    assert all(e["sample"].startswith("ROMEO:") and len(e["sample"]) == 206 for e in log)
    assert log[1]["sample"] != log[0]["sample"]
    for step in (0, 20, 40):
        assert load_weights(out / "checkpoints" / f"step_{step:05d}.npz")[3]["step"] == step
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert same_weights(out / "kid.npz", out / "checkpoints" / "step_00040.npz")
    kid = load_state(out / "kid.pt")
    assert kid["step"] == 40 and kid["vocab"] == load_weights(out / "kid.npz")[2]
    report = run("-m", "torch_gpt.report", "--out", str(out))
    assert report.returncode == 0 and f"val loss {log[-1]['val_loss']:.4f}" in report.stdout
    assert report.stdout.count("**step ") == 3 and log[-1]["sample"] in report.stdout
    spent = sum(e["eval_s"] for e in log)
    assert f"Evaluations (their losses, samples and snapshots): {spent:.0f} s of the {log[-1]['elapsed_s']:.0f} s, " \
           f"{spent / log[-1]['elapsed_s']:.1%}." in report.stdout


def test_kid_pt_kid_npz_and_numpy_gpt_agree(small_text, tmp_path):
    """One checkpoint, three readers: kid.pt's model, kid.npz, and numpy_gpt's forward on kid.npz."""
    out = tmp_path / "run"
    assert train(small_text, out, "--steps", "5", "--eval-interval", "5").returncode == 0
    kid = load_state(out / "kid.pt")
    params, config, chars, _ = load_weights(out / "kid.npz")
    assert list(kid["params"]) == list(params) and kid["vocab"] == chars and kid["config"] == config
    for name, p in params.items():
        np.testing.assert_array_equal(kid["params"][name], p)
    model = GPT(config)
    model.load_numpy(params)
    idx = np.random.default_rng(0).integers(0, config.vocab_size, (2, config.block_size))
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(idx))[0].numpy()
    numpy_logits = gpt_forward(params, config, idx)[0]
    # two float32 computations of one forward: within parity's derived tolerance of the logits' scale
    scale = np.abs(numpy_logits).max()
    assert np.abs(numpy_logits - torch_logits).max() <= TOLERANCE["float32"] * scale


def wait_for_log_step(out, proc, step, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "log.jsonl").exists() and any(e["step"] >= step for e in read_log(out)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no evaluation at step {step} within {timeout} s")


STOP_FLAGS = ["--steps", "200", "--eval-interval", "50"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """-> (its text, the run): one run of STOP_FLAGS that nothing stops, which each signal's stopped and
    resumed run must end equal to."""
    folder = tmp_path_factory.mktemp("straight")
    text = folder / "small.txt"
    text.write_text(corpus_path().read_text(encoding="utf-8")[:8000], encoding="utf-8")
    assert train(text, folder / "run", *STOP_FLAGS).returncode == 0
    return text, folder / "run"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_and_resume_is_bit_identical(straight, tmp_path, signum):
    (small_text, straight), flags = straight, STOP_FLAGS
    stopped = tmp_path / "stopped"
    proc = start_training(small_text, stopped, *flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_log_step(stopped, proc, 50)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    at = load_state(stopped / "kid.pt")["step"]
    assert f"stopped by signal {int(signum)} at step {at}" in stdout and 50 <= at < 200
    assert not (stopped / "kid.npz").exists()
    resumed = train(small_text, stopped, *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {stopped / 'kid.pt'} at step {at}" in resumed.stdout
    assert same_weights(straight / "kid.npz", stopped / "kid.npz")
    assert [e["step"] for e in read_log(stopped)] == [0, 50, 100, 150, 200]
    assert [e["val_loss"] for e in read_log(stopped)] == [e["val_loss"] for e in read_log(straight)]


def test_resume_at_another_thread_count_warns_that_it_is_not_bit_identical(small_text, tmp_path):
    out = tmp_path / "run"
    flags = ["--eval-interval", "1"]
    assert train(small_text, out, "--steps", "1", *flags).returncode == 0
    assert load_state(out / "kid.pt")["threads"] == 1          # run() starts every command with OMP_NUM_THREADS=1
    same = train(small_text, out, "--steps", "2", *flags, "--resume")
    assert same.returncode == 0 and "warning" not in same.stdout
    kid = load_state(out / "kid.pt")
    save_state(out / "kid.pt", {**kid, "config": kid["config"].to_dict(), "threads": 3})
    other = train(small_text, out, "--steps", "3", *flags, "--resume")
    assert other.returncode == 0, other.stderr
    assert (f"warning: {out / 'kid.pt'} was trained with 3 CPU threads and this run has 1, so it will not end "
            f"bit-identical to a run that never stopped; set OMP_NUM_THREADS=3 for that") in other.stdout


def test_resume_without_a_checkpoint(small_text, tmp_path):
    assert_user_error(train(small_text, tmp_path / "empty", "--resume"), "--resume, but there is no checkpoint at")


def test_unknown_device(small_text, tmp_path):
    result = train(small_text, tmp_path / "o", "--device", "tpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --device: invalid choice: 'tpu'" in result.stderr


def test_compile_on_a_cpu_without_a_compiler_says_so(small_text, tmp_path):
    result = run(*TRAIN, "--data", str(small_text), "--out", str(tmp_path / "o"), *SMALL, "--compile",
                 env=dict(os.environ, CXX="no-such-c++"))
    assert_user_error(result, "--compile on a CPU needs a C++ compiler, and no-such-c++ was not found")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_a_gpu(small_text, tmp_path):
    result = run("-m", "torch_gpt.train", "--device", "cuda", "--data", str(small_text), "--out", str(tmp_path))
    assert_user_error(result, "--device cuda, but torch sees no CUDA GPU")


def test_no_matplotlib_says_so_in_one_line(small_text, tmp_path):
    fake = tmp_path / "no_mpl"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    out = tmp_path / "run"
    result = run(*TRAIN, "--data", str(small_text), "--out", str(out), *SMALL, "--steps", "2", "--eval-interval", "1",
                 env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("matplotlib is not installed, so no loss.png") == 1
    assert (out / "kid.npz").exists() and not (out / "loss.png").exists()
