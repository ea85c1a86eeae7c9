"""python -m torch_gpt.train: it learns, stops and resumes bit-identically, survives kill -9, writes
loadable files, never unpickles, and says clearly what is wrong."""
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
from numpy_gpt.checkpoint import load_weights
from numpy_gpt.cli import training_parser
from torch_gpt.checkpoint import load_kid, save_kid
from torch_gpt.model import GPT

from conftest import ROOT
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
    kid = load_kid(out / "kid.pt")
    assert kid["step"] == 40 and kid["vocab"] == load_weights(out / "kid.npz")[2]
    report = run("-m", "torch_gpt.report", "--out", str(out))
    assert report.returncode == 0 and f"val loss {log[-1]['val_loss']:.4f}" in report.stdout
    assert report.stdout.count("**step ") == 3 and log[-1]["sample"] in report.stdout


def test_kid_pt_kid_npz_and_numpy_gpt_agree(small_text, tmp_path):
    """One checkpoint, three readers: kid.pt's model, kid.npz, and numpy_gpt's forward on kid.npz."""
    out = tmp_path / "run"
    assert train(small_text, out, "--steps", "5", "--eval-interval", "5").returncode == 0
    kid = load_kid(out / "kid.pt")
    params, config, chars, _ = load_weights(out / "kid.npz")
    assert list(kid["model"]) == list(params)
    for name, p in params.items():
        np.testing.assert_array_equal(kid["model"][name].numpy(), p)
    model = GPT(config)
    model.load_numpy(params)
    idx = np.random.default_rng(0).integers(0, config.vocab_size, (2, config.block_size))
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(idx))[0].numpy()
    numpy_logits = gpt_forward(params, config, idx)[0]
    np.testing.assert_allclose(numpy_logits, torch_logits, rtol=0, atol=2e-5)   # float32 rounding only


def wait_for_log_step(out, proc, step, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "log.jsonl").exists() and any(e["step"] >= step for e in read_log(out)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no evaluation at step {step} within {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_and_resume_is_bit_identical(small_text, tmp_path, signum):
    flags = ["--steps", "400", "--eval-interval", "100"]
    straight = tmp_path / "straight"
    assert train(small_text, straight, *flags).returncode == 0
    stopped = tmp_path / "stopped"
    proc = start_training(small_text, stopped, *flags, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_log_step(stopped, proc, 100)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    at = load_kid(stopped / "kid.pt")["step"]
    assert f"stopped by signal {int(signum)} at step {at}" in stdout and 100 <= at < 400
    assert not (stopped / "kid.npz").exists()
    resumed = train(small_text, stopped, *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {stopped / 'kid.pt'} at step {at}" in resumed.stdout
    assert same_weights(straight / "kid.npz", stopped / "kid.npz")
    assert [e["step"] for e in read_log(stopped)] == [0, 100, 200, 300, 400]
    assert [e["val_loss"] for e in read_log(stopped)] == [e["val_loss"] for e in read_log(straight)]


# The trainer, stopped by SIGTERM at a chosen step with no timing involved: the signal is raised in the
# trainer's own process while it draws the batches of step STOP_AT - 1, so the stop check that follows
# that step (the trainer checks after every step on a CPU) sees it at step STOP_AT. Test-only: it
# wraps torch_gpt.train.micro_batches from outside and changes nothing in the trainer.
STOP_AT = """
import signal, sys
import torch_gpt.train as train
from numpy_gpt.cli import run_cli
stop_at = int(sys.argv.pop(1))
draw = train.micro_batches
def micro_batches(train_ids, args, step, *rest):
    if step == stop_at - 1:
        signal.raise_signal(signal.SIGTERM)
    return draw(train_ids, args, step, *rest)
train.micro_batches = micro_batches
run_cli(train.main)
"""
TIMING = ("elapsed_s", "tokens_per_s")


def without_timing(log):
    return [{k: v for k, v in e.items() if k not in TIMING} for e in log]


@pytest.mark.parametrize("stop_at", [4, 6], ids=["at an evaluation", "at the last step"])
def test_a_stop_at_any_step_resumes_to_the_files_of_an_uninterrupted_run(small_text, tmp_path, stop_at):
    flags = ["--steps", "6", "--eval-interval", "2"]
    straight = tmp_path / "straight"
    assert train(small_text, straight, *flags).returncode == 0
    stopped = tmp_path / "stopped"
    result = run("-c", STOP_AT, str(stop_at), *TRAIN[2:], "--data", str(small_text), "--out", str(stopped),
                 *SMALL, *flags)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert f"stopped by signal {int(signal.SIGTERM)} at step {stop_at}" in result.stdout
    assert load_kid(stopped / "kid.pt")["step"] == stop_at and not (stopped / "kid.npz").exists()
    resumed = train(small_text, stopped, *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {stopped / 'kid.pt'} at step {stop_at} of 6" in resumed.stdout
    # the same log rows (but for the timing), snapshots and final weights as the run that never stopped
    assert [e["step"] for e in read_log(stopped)] == [0, 2, 4, 6]
    assert without_timing(read_log(stopped)) == without_timing(read_log(straight))
    snapshots = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == snapshots
    for name in snapshots:
        assert same_weights(straight / "checkpoints" / name, stopped / "checkpoints" / name)
    assert same_weights(straight / "kid.npz", stopped / "kid.npz")
    assert load_weights(stopped / "kid.npz")[1:] == load_weights(straight / "kid.npz")[1:]   # config, vocab, meta
    assert load_kid(stopped / "kid.pt")["step"] == 6


def test_resume_at_another_thread_count_warns_that_it_is_not_bit_identical(small_text, tmp_path):
    out = tmp_path / "run"
    flags = ["--eval-interval", "1"]
    assert train(small_text, out, "--steps", "1", *flags).returncode == 0
    assert load_kid(out / "kid.pt")["threads"] == 1          # run() starts every command with OMP_NUM_THREADS=1
    same = train(small_text, out, "--steps", "2", *flags, "--resume")
    assert same.returncode == 0 and "warning" not in same.stdout
    kid = load_kid(out / "kid.pt")
    save_kid(out / "kid.pt", {**kid, "config": kid["config"].to_dict(), "threads": 3})
    other = train(small_text, out, "--steps", "3", *flags, "--resume")
    assert other.returncode == 0, other.stderr
    assert (f"warning: {out / 'kid.pt'} was trained with 3 CPU threads and this run has 1, so it will not end "
            f"bit-identical to a run that never stopped; set OMP_NUM_THREADS=3 for that") in other.stdout


def test_kill_9_loses_at_most_the_steps_since_the_last_checkpoint(small_text, tmp_path):
    flags = ["--steps", "300", "--eval-interval", "50"]
    straight = tmp_path / "straight"
    assert train(small_text, straight, *flags).returncode == 0
    killed = tmp_path / "killed"
    proc = start_training(small_text, killed, *flags, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_log_step(killed, proc, 100)
    proc.kill()             # at once: wherever the trainer is, even between writing log.jsonl and kid.pt
    proc.wait()
    # every file is whole: the last checkpoint loads, the log parses, no temporary file is left behind.
    # An evaluation writes log.jsonl, then kid.pt, so with the log at step 100 kid.pt holds step 50 at
    # least (written by the evaluation before), and the log is at most one evaluation ahead of it.
    step = load_kid(killed / "kid.pt")["step"]
    assert step % 50 == 0 and step >= 50
    assert all(e["step"] <= step + 50 for e in read_log(killed))
    for snapshot in (killed / "checkpoints").iterdir():
        load_weights(snapshot)
    resumed = train(small_text, killed, *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(straight / "kid.npz", killed / "kid.npz")


def test_resume_of_a_finished_run_has_nothing_to_do(small_text, tmp_path):
    out = tmp_path / "run"
    assert train(small_text, out, "--steps", "4", "--eval-interval", "2").returncode == 0
    result = train(small_text, out, "--steps", "4", "--eval-interval", "2", "--resume")
    assert result.returncode == 0 and "already at step 4 of --steps 4: nothing to do" in result.stdout
    longer = train(small_text, out, "--steps", "6", "--eval-interval", "2", "--resume")
    assert longer.returncode == 0, longer.stderr
    assert [e["step"] for e in read_log(out)] == [0, 2, 4, 6]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small_text, tmp_path):
    out = tmp_path / "run"
    result = train(small_text, out, "--steps", "200", "--eval-interval", "1000", "--lr", "1e6", "--grad-clip", "0",
                   "--warmup-steps", "0")
    assert_user_error(result, "the loss became nan")
    assert "still holds the last good state" in result.stderr
    kid = load_kid(out / "kid.pt")
    assert kid["step"] == 0 and all(torch.isfinite(t).all() for t in kid["model"].values())
    assert not (out / "kid.npz").exists()


def test_resume_without_a_checkpoint(small_text, tmp_path):
    assert_user_error(train(small_text, tmp_path / "empty", "--resume"), "--resume, but there is no checkpoint at")


def test_resume_with_other_flags(small_text, tmp_path):
    out = tmp_path / "run"
    assert train(small_text, out, "--steps", "2", "--eval-interval", "1").returncode == 0
    before = (out / "kid.pt").read_bytes()
    result = run(*TRAIN, "--data", str(small_text), "--out", str(out), "--resume", *SMALL, "--n-layer", "2", "--steps", "4")
    assert_user_error(result, "was trained with n_layer=1 (flags say 2)")
    result = train(small_text, out, "--resume", "--steps", "4", "--lr", "0.5")
    default_lr = training_parser("", "").get_default("lr")
    assert_user_error(result, f"was trained with --lr {default_lr} (flags say 0.5)")
    assert (out / "kid.pt").read_bytes() == before


def test_new_run_refuses_to_overwrite(small_text, tmp_path):
    out = tmp_path / "run"
    assert train(small_text, out, "--steps", "1").returncode == 0
    before = (out / "kid.pt").read_bytes()
    assert_user_error(train(small_text, out, "--steps", "1"), "already holds a run (kid.pt); pass --resume")
    assert (out / "kid.pt").read_bytes() == before


def test_unknown_device(small_text, tmp_path):
    result = train(small_text, tmp_path / "o", "--device", "tpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --device: invalid choice: 'tpu'" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_a_gpu(small_text, tmp_path):
    result = run("-m", "torch_gpt.train", "--device", "cuda", "--data", str(small_text), "--out", str(tmp_path))
    assert_user_error(result, "--device cuda, but torch sees no CUDA GPU")


def test_truncated_and_foreign_kid_pt(small_text, tmp_path):
    out = tmp_path / "run"
    assert train(small_text, out, "--steps", "1").returncode == 0
    data = (out / "kid.pt").read_bytes()
    (out / "kid.pt").write_bytes(data[: len(data) // 2])
    assert_user_error(train(small_text, out, "--resume", "--steps", "2"), "is truncated, damaged or not a kid.pt")
    torch.save({"weights": torch.zeros(2)}, out / "kid.pt")
    assert_user_error(train(small_text, out, "--resume", "--steps", "2"), "is not a tiny-llm kid.pt checkpoint")


class Exploit:
    """Unpickling this would run os.system: a weights_only load must refuse it."""
    def __reduce__(self):
        return (os.system, (f"touch {Exploit.marker}",))


def test_loading_never_unpickles(tmp_path):
    Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "tiny-llm kid.pt v1", "model": Exploit()}, path)
    with pytest.raises(Exception, match="truncated, damaged or not a kid.pt"):
        load_kid(path)
    assert not Exploit.marker.exists()


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
