"""python -m numpy_gpt.train and numpy_gpt.sample, run as a user runs them, and numpy_gpt without torch."""
import json
import os
import subprocess
import sys

import pytest

from numpy_gpt.machinery.checkpoint import load_weights

from conftest import ROOT

SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "8",
         "--eval-batches", "4", "--eval-train-batches", "4"]


def run(*args, env=None, cwd=ROOT):
    """Run python with args, one thread each (see conftest.py)."""
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def assert_user_error(result, message):
    """A clear one-line error: exit status 1, the message, and no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr


@pytest.mark.parametrize("module", ["numpy_gpt.train", "numpy_gpt.sample"])
def test_help(module):
    result = run("-m", module, "--help")
    assert result.returncode == 0 and "usage: python -m " + module in result.stdout


def test_train_cuts_the_loss_then_sample(small_text, tmp_path):
    out = tmp_path / "run"
    result = run("-m", "numpy_gpt.train", "--data", str(small_text), "--out", str(out), "--steps", "40",
                 "--eval-interval", "20", "--lr", "1e-2", *SMALL)
    assert result.returncode == 0, result.stderr
    assert "parameters" in result.stdout and "done: val loss" in result.stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 20, 40]
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 0.5
    params, config, chars, meta = load_weights(out / "kid.npz")
    assert config.n_embd == 16 and meta["step"] == 40 and len(chars) == config.vocab_size
    sample = run("-m", "numpy_gpt.sample", "--checkpoint", str(out / "kid.npz"), "--prompt", "The",
                 "--max-new-tokens", "50")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("The") and len(sample.stdout) == len("The") + 50 + 1


def test_refuses_to_overwrite_a_trained_kid(small_text, tmp_path):
    (tmp_path / "kid.npz").write_bytes(b"precious")
    result = run("-m", "numpy_gpt.train", "--data", str(small_text), "--out", str(tmp_path), "--steps", "1", *SMALL)
    assert_user_error(result, "already holds a run (kid.npz); pass --resume")
    assert (tmp_path / "kid.npz").read_bytes() == b"precious"


@pytest.mark.parametrize("flags, message", [
    (["--data", "/nonexistent/corpus.txt"], "data file not found: /nonexistent/corpus.txt"),
    (["--n-embd", "30", "--n-head", "4"], "n_embd (30) must be divisible by n_head (4)"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--eval-train-batches", "0"], "--eval-train-batches must be at least 1"),
    (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--block-size", "5000"], "the val split has 800 characters, fewer than block_size+1 = 5001"),
])
def test_bad_settings(small_text, tmp_path, flags, message):
    args = ["--data", str(small_text), "--out", str(tmp_path / "o"), *SMALL, *flags]
    assert_user_error(run("-m", "numpy_gpt.train", *args), message)


def test_numpy_gpt_does_not_import_torch():
    result = run("-c", "import sys, numpy_gpt, numpy_gpt.train, numpy_gpt.sample; "
                       "assert 'torch' not in sys.modules; print('ok')")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_numpy_gpt_runs_where_torch_cannot_be_imported(small_text, tmp_path):
    """A `torch` that fails to import stands in for a machine without torch: train and sample still work."""
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    env = {"PYTHONPATH": f"{fake}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = tmp_path / "run"
    result = run("-m", "numpy_gpt.train", "--data", str(small_text), "--out", str(out), "--steps", "2",
                 "--eval-interval", "2", *SMALL, env=env)
    assert result.returncode == 0, result.stderr
    result = run("-m", "numpy_gpt.sample", "--checkpoint", str(out / "kid.npz"), "--max-new-tokens", "5", env=env)
    assert result.returncode == 0, result.stderr


def test_report_reads_a_log_into_the_readmes_figures(tmp_path):
    """numpy_gpt.report (torch_gpt.report is the same): the final line, the evaluations' share of the
    time, a row per evaluation and each sample; a log whose clock reads 0 (a run stopped at once) has
    no share to give, and still reports."""
    from numpy_gpt.machinery.report import load_log, report
    rows = [{"step": 0, "train_loss": 4.2, "val_loss": 4.25, "elapsed_s": 3.0, "eval_s": 3.0, "sample": "ROMEO:xy"},
            {"step": 500, "train_loss": 1.81234, "val_loss": 1.9, "elapsed_s": 120.0, "eval_s": 6.0,
             "sample": "ROMEO:ab"}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report(load_log(tmp_path))
    assert text.startswith("Final (step 500): train loss 1.8123, val loss 1.9000, 2.0 minutes of wall time")
    assert "Evaluations (their losses, samples and snapshots): 9 s of the 120 s, 7.5%." in text
    assert "| 0 | 4.2000 | 4.2500 | 0.1 |" in text and "| 500 | 1.8123 | 1.9000 | 2.0 |" in text
    assert "**step 500** (val loss 1.90)\n\n```\nROMEO:ab\n```" in text
    (tmp_path / "log.jsonl").write_text(json.dumps({**rows[0], "elapsed_s": 0, "eval_s": 0}) + "\n")
    text = report(load_log(tmp_path))
    assert text.startswith("Final (step 0): train loss 4.2000") and "Evaluations" not in text
