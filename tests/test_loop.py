"""numpy_gpt.machinery.loop, the one training loop, run through both trainers as a user runs them.

Each test runs with each trainer: the same files, stops at any step that resume to the files of a
run that never stopped, kill -9, the NaN stop, the refusals. Then the training state's format, and
a run that moves between the backends, in float64, against runs that never moved.
"""
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from numpy_gpt.machinery.checkpoint import load_state, load_weights, save_state
from numpy_gpt.config import GPTConfig
from numpy_gpt.machinery.loop import Data, Progress
from numpy_gpt.model import gpt_backward, gpt_forward
from numpy_gpt.machinery.threaded import NumpyBackend
from numpy_gpt.train import parser as numpy_parser
from parity.compare import TOLERANCE, loss_tolerance
from torch_gpt.train import cpu_has_bf16

from bounds import LOGITS_FILE, SHADOW_RUN, logged_run_rows, record_margin
from conftest import ROOT, corpus_path
from test_numpy_cli import SMALL, assert_user_error, run

TRAINERS = {"numpy_gpt": ["numpy_gpt.train"], "torch_gpt": ["torch_gpt.train", "--device", "cpu"]}
BOTH = pytest.mark.parametrize("trainer", list(TRAINERS))
TIMING = ("elapsed_s", "tokens_per_s", "eval_s")


def train(trainer, text, out, *flags):
    module, *device = TRAINERS[trainer]
    return run("-m", module, *device, "--data", str(text), "--out", str(out), *SMALL, *flags)


# The trainer, stopped by a signal at a chosen step with no timing involved: the signal is raised in
# the trainer's own process as it starts step STOP_AT - 1, so the stop check after that step sees it
# at step STOP_AT. Test-only: it wraps the backend's train_step from outside and changes nothing else.
STOP_AT = """
import importlib, signal, sys
module, backend, stop_at, signum = sys.argv.pop(1), sys.argv.pop(1), int(sys.argv.pop(1)), int(sys.argv.pop(1))
trainer = importlib.import_module(module)
Backend = getattr(trainer, backend)
step_once = Backend.train_step
def train_step(self, step, lr):
    if step == stop_at - 1:
        signal.raise_signal(signum)
    return step_once(self, step, lr)
Backend.train_step = train_step
from numpy_gpt.machinery.cli import run_cli
run_cli(trainer.main)
"""
BACKENDS = {"numpy_gpt": "NumpyBackend", "torch_gpt": "TorchBackend"}


def train_until(trainer, stop_at, text, out, *flags, signum=signal.SIGTERM):
    module, *device = TRAINERS[trainer]
    return run("-c", STOP_AT, module, BACKENDS[trainer], str(stop_at), str(int(signum)), *device,
               "--data", str(text), "--out", str(out), *SMALL, *flags)


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def without_timing(log):
    return [{k: v for k, v in e.items() if k not in TIMING} for e in log]


def same_weights(a, b):
    pa, pb = load_weights(a)[0], load_weights(b)[0]
    return all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.fixture(scope="module")
def small_text(tmp_path_factory):
    """8 KB of tinyshakespeare, for the whole module (the runs below are shared between tests)."""
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(corpus_path().read_text(encoding="utf-8")[:8000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def straight(small_text, tmp_path_factory):
    """straight(trainer, *flags) -> the --out of a run that was never stopped, trained once per module."""
    runs = {}

    def get(trainer, *flags):
        if (trainer, flags) not in runs:
            out = tmp_path_factory.mktemp("straight")
            result = train(trainer, small_text, out, *flags)
            assert result.returncode == 0, result.stderr
            runs[trainer, flags] = out
        return runs[trainer, flags]
    return get


@pytest.fixture(scope="module")
def shadowed(small_text, tmp_path_factory):
    """shadowed(*flags) -> the --out of numpy_gpt's run of those flags carrying the error model's errors
    (tests/bounds.py, SHADOW_RUN), whose distance from numpy_gpt's own run sets the bars of a float64 run."""
    runs = {}

    def get(*flags):
        if flags not in runs:
            out = tmp_path_factory.mktemp("shadow")
            result = run("-c", SHADOW_RUN, str(out / LOGITS_FILE), "--data", str(small_text), "--out", str(out),
                         *SMALL, *flags)
            assert result.returncode == 0, result.stderr
            runs[flags] = out
        return runs[flags]
    return get


def assert_same_run(got, want, ref, shadow, test, what):
    """got's files against want's, every tensor and logged loss within the bar the shadow run sets."""
    rows = logged_run_rows(got, want, ref, shadow)
    assert all(row.ok for row in rows), [(row.name, row.max_rel, row.tol) for row in rows if not row.ok]
    record_margin(test, max(row.margin for row in rows), what)


@BOTH
def test_one_loop_writes_the_same_files(trainer, small_text, tmp_path):
    out = tmp_path / "run"
    result = train(trainer, small_text, out, "--steps", "4", "--eval-interval", "2")
    assert result.returncode == 0, result.stderr
    assert "done: val loss" in result.stdout and "step 4/4" in result.stderr     # the progress line
    log = read_log(out)
    assert [e["step"] for e in log] == [0, 2, 4]
    assert all(set(e) == {"step", "train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s", "eval_s", "sample"}
               for e in log)
    assert all(e["eval_s"] > 0 for e in log) and sum(e["eval_s"] for e in log[:-1]) < log[-1]["elapsed_s"]
    assert all(e["sample"].startswith("ROMEO:") and len(e["sample"]) == 206 for e in log)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step_{s:05d}.npz" for s in (0, 2, 4)]
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = load_state(out / "kid.pt")
    precision = "bf16 autocast" if trainer == "torch_gpt" and cpu_has_bf16() else "float32"   # --bf16 auto
    assert state["step"] == state["adam_step"] == 4 and state["backend"] == trainer
    assert state["precision"] == precision
    params, config, chars, meta = load_weights(out / "kid.npz")
    assert meta == {"step": 4, "backend": trainer, "precision": precision, "val_loss": log[-1]["val_loss"]}
    assert state["config"] == config and state["vocab"] == chars
    assert all(np.array_equal(state["params"][k], params[k]) for k in params)
    assert same_weights(out / "kid.npz", out / "checkpoints" / "step_00004.npz")


def test_a_resume_in_another_precision_says_so(small_text, tmp_path):
    """torch_gpt's --bf16 is recorded in kid.pt; a resume in another precision goes on, and says that it
    is no longer the run that never stopped. (Without bf16 in this CPU, auto is float32: no note.)"""
    out = tmp_path / "run"
    assert train("torch_gpt", small_text, out, "--steps", "2", "--eval-interval", "2", "--bf16", "off").returncode == 0
    assert load_state(out / "kid.pt")["precision"] == "float32"
    resumed = train("torch_gpt", small_text, out, "--steps", "4", "--eval-interval", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    note = f"note: {out / 'kid.pt'} was trained in float32 and goes on in bf16 autocast"
    assert (note in resumed.stdout) is cpu_has_bf16()
    assert load_state(out / "kid.pt")["precision"] == ("bf16 autocast" if cpu_has_bf16() else "float32")


FLOAT64 = ("--steps", "10", "--eval-interval", "5", "--dtype", "float64", "--lr", "1e-2")


def test_the_two_trainers_log_the_same_run_in_float64(straight, shadowed):
    """The same flags give the same run: weights, AdamW's moments and every logged loss within the bars
    of parity's error model (numpy_gpt.machinery.rounding.Shadow), and the same samples, character for character: one
    loop, two steps that compute the same thing."""
    a, b = (straight(trainer, *FLOAT64) for trainer in TRAINERS)
    assert [e["step"] for e in read_log(a)] == [e["step"] for e in read_log(b)] == [0, 5, 10]
    assert [e["sample"] for e in read_log(a)] == [e["sample"] for e in read_log(b)]
    assert_same_run(b, a, a, shadowed(*FLOAT64), "test_the_two_trainers_log_the_same_run", "every tensor and loss")
    # the bars are no blanket: the same run with a learning rate 0.001% off falls outside them
    off = straight("numpy_gpt", *FLOAT64[:-1], "1.00001e-2")
    assert not all(row.ok for row in logged_run_rows(off, a, a, shadowed(*FLOAT64)))


def test_the_two_trainers_accumulate_micro_batches_alike(straight, shadowed):
    """--grad-accum 2: numpy_gpt's mean of two micro-batches' gradients is torch_gpt's, in float64, and
    not the same run as one micro-batch of the same size."""
    flags = ("--steps", "4", "--eval-interval", "4", "--dtype", "float64", "--grad-accum", "2", "--lr", "1e-2")
    a, b = (straight(trainer, *flags) for trainer in TRAINERS)
    assert_same_run(b, a, a, shadowed(*flags), "test_the_two_trainers_accumulate_micro_batches_alike",
                    "every tensor and loss")
    one = load_state(straight("numpy_gpt", *flags[:-4], "--lr", "1e-2") / "kid.pt")
    assert not np.allclose(one["params"]["wte.weight"], load_state(a / "kid.pt")["params"]["wte.weight"],
                           rtol=0, atol=1e-6)


@BOTH
@pytest.mark.parametrize("stop_at", [4, 5, 6], ids=["at an evaluation", "between evaluations", "at the last step"])
def test_a_stop_at_any_step_resumes_to_the_files_of_an_uninterrupted_run(trainer, stop_at, small_text, straight,
                                                                           tmp_path):
    flags = ["--steps", "6", "--eval-interval", "2"]
    straight = straight(trainer, *flags)
    stopped = tmp_path / "stopped"
    signum = signal.SIGINT if stop_at == 5 else signal.SIGTERM
    result = train_until(trainer, stop_at, small_text, stopped, *flags, signum=signum)
    assert result.returncode == 128 + signum, result.stderr
    assert f"stopped by signal {int(signum)} at step {stop_at}" in result.stdout
    assert load_state(stopped / "kid.pt")["step"] == stop_at and not (stopped / "kid.npz").exists()
    resumed = train(trainer, small_text, stopped, *flags, "--resume")
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
    assert load_state(stopped / "kid.pt")["step"] == 6


def start_training(trainer, text, out, *flags):
    module, *device = TRAINERS[trainer]
    return subprocess.Popen([sys.executable, "-m", module, *device, "--data", str(text), "--out", str(out), *SMALL,
                             *flags], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@BOTH
def test_kill_9_loses_at_most_the_steps_since_the_last_evaluation(trainer, small_text, straight, tmp_path):
    flags = ["--steps", "200", "--eval-interval", "40"]
    straight = straight(trainer, *flags)
    killed = tmp_path / "killed"
    proc = start_training(trainer, small_text, killed, *flags)
    deadline = time.time() + 300
    while not ((killed / "log.jsonl").exists() and read_log(killed)[-1]["step"] >= 80):
        assert proc.poll() is None and time.time() < deadline, "no evaluation at step 80"
        time.sleep(0.01)
    proc.kill()             # at once: wherever the trainer is, even between writing log.jsonl and kid.pt
    proc.wait()
    # every file is whole: the state loads, the log parses, every snapshot loads. An evaluation writes
    # log.jsonl, then kid.pt, so with the log at step 80 or later, kid.pt holds step 40 or later, and
    # the log is at most one evaluation ahead of it.
    step = load_state(killed / "kid.pt")["step"]
    assert step % 40 == 0 and step >= 40
    assert all(e["step"] <= step + 40 for e in read_log(killed))
    for snapshot in (killed / "checkpoints").glob("step_*.npz"):
        load_weights(snapshot)
    (killed / ".log.jsonl.abc123.tmp").write_text('{"step": 1')       # as a kill in mid-write leaves one
    resumed = train(trainer, small_text, killed, *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(straight / "kid.npz", killed / "kid.npz")
    assert not [p for p in killed.rglob("*") if p.name.endswith(".tmp")]      # the resume cleared them


@BOTH
def test_nan_loss_stops_and_keeps_the_last_good_state(trainer, small_text, tmp_path):
    out = tmp_path / "run"
    result = train(trainer, small_text, out, "--steps", "200", "--eval-interval", "1000", "--lr", "1e6",
                   "--grad-clip", "0", "--warmup-steps", "0")
    assert_user_error(result, "the loss became nan")
    assert f"{out / 'kid.pt'} still holds the last good state. Try a lower --lr (now 1000000.0) or --grad-clip 1" \
        in result.stderr
    state = load_state(out / "kid.pt")          # load_state refuses NaN or inf in any tensor
    assert state["step"] == 0 and not (out / "kid.npz").exists()


@BOTH
def test_resume_of_a_finished_run_has_nothing_to_do(trainer, small_text, tmp_path):
    out = tmp_path / "run"
    assert train(trainer, small_text, out, "--steps", "4", "--eval-interval", "2").returncode == 0
    before = (out / "kid.pt").read_bytes()
    result = train(trainer, small_text, out, "--steps", "4", "--eval-interval", "2", "--resume")
    assert result.returncode == 0 and "already at step 4 of --steps 4: nothing to do" in result.stdout
    bare = train(trainer, small_text, out, "--resume")          # no --steps: the run's own 4, not the default
    assert bare.returncode == 0 and "already at step 4 of --steps 4: nothing to do" in bare.stdout
    assert (out / "kid.pt").read_bytes() == before
    longer = train(trainer, small_text, out, "--steps", "6", "--resume")       # the run's own --eval-interval
    assert longer.returncode == 0, longer.stderr
    assert "the run was started with --steps 4; it now goes to 6" in longer.stdout
    assert [e["step"] for e in read_log(out)] == [0, 2, 4, 6]


def test_a_resume_that_leaves_out_the_runs_length_goes_on_as_the_run_was_started(small_text, straight, tmp_path):
    """The README's bare `--out DIR --resume` after a run started with its own --steps, --eval-interval,
    --eval-batches, --eval-train-batches and --sample-prompt: kid.pt keeps them, and the resumed run
    writes the files of the run that never stopped, not a run of the defaults' length."""
    flags = ["--steps", "6", "--eval-interval", "2", "--sample-prompt", "Fir"]
    stopped = tmp_path / "stopped"
    assert train_until("numpy_gpt", 3, small_text, stopped, *flags).returncode == 128 + signal.SIGTERM
    model = SMALL[:SMALL.index("--eval-batches")]             # SMALL without its --eval-batches 4 --eval-train-batches 4
    resumed = run("-m", "numpy_gpt.train", "--data", str(small_text), "--out", str(stopped), *model, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {stopped / 'kid.pt'} at step 3 of 6" in resumed.stdout
    assert without_timing(read_log(stopped)) == without_timing(read_log(straight("numpy_gpt", *flags)))
    assert same_weights(stopped / "kid.npz", straight("numpy_gpt", *flags) / "kid.npz")


@BOTH
def test_a_new_run_or_other_settings_never_overwrite_a_run(trainer, small_text, tmp_path):
    out = tmp_path / "run"
    assert train(trainer, small_text, out, "--steps", "2", "--eval-interval", "1").returncode == 0
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert_user_error(train(trainer, small_text, out, "--steps", "1"), "already holds a run (kid.pt); pass --resume")
    assert_user_error(train(trainer, small_text, out, "--resume", "--steps", "4", "--n-layer", "2"),
                      "was trained with n_layer=1 (flags say 2)")
    assert_user_error(train(trainer, small_text, out, "--resume", "--steps", "4", "--lr", "0.5"),
                      "was trained with --lr 0.003 (flags say 0.5)")
    assert_user_error(train(trainer, small_text, out, "--resume", "--steps", "4", "--grad-accum", "2"),
                      "was trained with 1 micro-batches per step (processes x --grad-accum; now 2)")
    lower = tmp_path / "lower.txt"              # another text: its vocabulary, not a flag, differs
    lower.write_text(small_text.read_text(encoding="utf-8").lower(), encoding="utf-8")
    chars = len(set(small_text.read_text(encoding="utf-8")))
    assert_user_error(train(trainer, lower, out, "--resume", "--steps", "4"),
                      f"was trained on a text with another vocabulary ({chars} characters; this --data has "
                      f"{len(set(lower.read_text(encoding='utf-8')))}); pass the same --data")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_the_eta_counts_training_steps_and_the_evaluations_left():
    progress = Progress(total_steps=100, eval_interval=30, stream=io.StringIO())
    progress.start = 0.0
    progress.evaluated(5.0)                  # the evaluation at step 0 took 5 s
    # 10 steps done at 25 s: 20 s of training, 2 s a step; evaluations left at 30, 60, 90 and 100
    assert progress.eta(10, now=25.0) == 90 * 2.0 + 4 * 5.0
    # step 30 done at 65 s: its own evaluation comes next, so 30's, 60's, 90's and 100's are left
    assert progress.eta(30, now=65.0) == 70 * 2.0 + 4 * 5.0
    for _ in range(2):
        progress.evaluated(5.0)              # at 30 and 60
    assert progress.eta(90, now=195.0) == 10 * 2.0 + 2 * 5.0    # 90's and 100's evaluations are left
    assert progress.eta(0, now=5.0) != progress.eta(0, now=5.0)  # nothing measured yet: NaN, shown as --:--


@pytest.mark.parametrize("threads", [2, 3])
def test_numpy_gpts_threads_only_reorder_the_sums(threads):
    """NumpyBackend cuts a micro-batch into one part a thread, and spreads the evaluation batches over
    the threads. In float64 its loss, gradients and evaluation equal one call on the whole batch, and
    the plain mean over the batches, to float64 rounding. 3 threads cut 8 rows unevenly (3, 3, 2) and
    5 batches unevenly, so a part weighted by the wrong share, or a batch counted twice, fails."""
    backend = NumpyBackend(numpy_parser().parse_args([*SMALL, "--dtype", "float64"]))
    backend.threads, backend.pool = threads, ThreadPoolExecutor(threads)
    rng = np.random.default_rng(0)
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16)
    val = [tuple(rng.integers(0, 11, (2, 8, 16))) for _ in range(5)]
    backend.start(Data(None, config, rng.integers(0, 11, 1000), None, {"val": val}), None)
    backend.weights = {k: w + 0.1 * rng.standard_normal(w.shape) for k, w in backend.weights.items()}

    x, y = rng.integers(0, 11, (2, 8, 16))
    loss, grads = backend.forward_backward(backend.weights, config, x, y, None)
    logits, want_loss, cache = gpt_forward(backend.weights, config, x, y)
    want = gpt_backward(backend.weights, config, cache)
    assert abs(loss - want_loss) <= loss_tolerance(want_loss, np.abs(logits).max())     # parity's float64 bars
    for name, g in want.items():
        assert np.abs(grads[name] - g).max() <= TOLERANCE["float64"] * np.abs(g).max(), name
    forwards = [gpt_forward(backend.weights, config, vx, vy)[:2] for vx, vy in val]
    want_val = np.mean([loss for _, loss in forwards])
    largest_logit = max(np.abs(z).max() for z, _ in forwards)
    assert abs(backend.evaluate("val") - want_val) <= loss_tolerance(want_val, largest_logit)


# ------------------------------------------------------------------------------------------------
# a run that moves between the backends


@pytest.mark.parametrize("first, then", [("numpy_gpt", "torch_gpt"), ("torch_gpt", "numpy_gpt")])
def test_a_run_that_switches_backends_matches_runs_that_never_did(first, then, small_text, straight, shadowed,
                                                                  tmp_path):
    """In float64, a run that stops at step 5 in one backend and finishes in the other ends within the
    bars of parity's error model (numpy_gpt.machinery.rounding.Shadow) of a run that never switched, in either backend:
    weights, AdamW's moments and every logged loss. The samples are the same text."""
    moved = tmp_path / "moved"
    assert train_until(first, 5, small_text, moved, *FLOAT64).returncode == 128 + signal.SIGTERM
    resumed = train(then, small_text, moved, *FLOAT64, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"note: {moved / 'kid.pt'} was written by {first}; continuing it with {then}" in resumed.stdout
    got = load_state(moved / "kid.pt")
    assert got["step"] == got["adam_step"] == 10 and got["backend"] == then
    for trainer in TRAINERS:
        want = straight(trainer, *FLOAT64)
        assert_same_run(moved, want, straight("numpy_gpt", *FLOAT64), shadowed(*FLOAT64),
                        "test_a_run_that_switches_backends", f"{first} then {then}, against {trainer}")
        assert [e["sample"] for e in read_log(moved)] == [e["sample"] for e in read_log(want)]
    # and the switch is not a no-op: the moved run is not bit-identical to the run it left
    assert not np.array_equal(got["params"]["h.0.attn.c_attn.weight"],
                              load_state(straight(first, *FLOAT64) / "kid.pt")["params"]["h.0.attn.c_attn.weight"])


# ------------------------------------------------------------------------------------------------
# the training state's format


@pytest.fixture
def state_file(small_text, tmp_path):
    out = tmp_path / "run"
    assert train("numpy_gpt", small_text, out, "--steps", "2", "--eval-interval", "1").returncode == 0
    return out / "kid.pt"


def test_the_state_round_trips_exactly(state_file, tmp_path):
    state = load_state(state_file)
    save_state(tmp_path / "again.pt", {**state, "config": state["config"].to_dict()})
    again = load_state(tmp_path / "again.pt")
    assert {k: v for k, v in again.items() if k not in ("params", "m", "v")} == \
        {k: v for k, v in state.items() if k not in ("params", "m", "v")}
    for part in ("params", "m", "v"):
        assert list(again[part]) == list(state[part])
        assert all(np.array_equal(again[part][k], state[part][k]) for k in state[part])


def resume(state_file, text):
    return run("-m", "numpy_gpt.train", "--data", str(text),
               "--out", str(state_file.parent), *SMALL, "--steps", "3", "--eval-interval", "1", "--resume")


def test_truncated_foreign_and_damaged_states_are_refused_in_one_line(state_file, small_text):
    data = state_file.read_bytes()
    state_file.write_bytes(data[: len(data) // 2])
    assert_user_error(resume(state_file, small_text), "is truncated, damaged or not a kid.pt training state")
    with open(state_file, "wb") as f:                 # np.savez would add .npz to a path
        np.savez(f, weights=np.zeros(2))
    assert_user_error(resume(state_file, small_text), "is not a kid.pt training state (its __format__ entry is missing")
    state_file.write_bytes(data)
    state = load_state(state_file)
    state["m"]["wte.weight"] = state["m"]["wte.weight"][:3]
    save_state(state_file, {**state, "config": state["config"].to_dict()})
    assert_user_error(resume(state_file, small_text), "m/wte.weight is float32 of shape (3, 16), expected float32")
    state["m"]["wte.weight"] = np.full_like(state["params"]["wte.weight"], np.nan)
    save_state(state_file, {**state, "config": state["config"].to_dict()})
    assert_user_error(resume(state_file, small_text), "m/wte.weight contains NaN or inf")
    state["m"]["wte.weight"] = state["params"]["wte.weight"].copy()
    save_state(state_file, {**state, "config": state["config"].to_dict(), "run": {**state["run"], "steps": "2"}})
    assert_user_error(resume(state_file, small_text), "its run settings ({'steps': '2', ")


class Exploit:
    """Unpickling this would run os.system: loading a state must never unpickle."""
    def __reduce__(self):
        return (os.system, (f"touch {Exploit.marker}",))


def test_loading_never_unpickles(state_file, small_text, tmp_path):
    torch = pytest.importorskip("torch")
    Exploit.marker = tmp_path / "pwned"
    torch.save({"format": "tiny-llm kid.pt v1", "model": Exploit()}, state_file)      # an old kid.pt's form
    assert_user_error(resume(state_file, small_text), "is a kid.pt from tiny-llm before version 2 (a torch.save file)")
    with open(state_file, "wb") as f:                                                # a pickled object array
        np.savez(f, __format__=np.array("tiny-llm training state v2"), __meta__=np.array([Exploit()], dtype=object))
    assert_user_error(resume(state_file, small_text), "is truncated, damaged or not a kid.pt training state")
    assert not Exploit.marker.exists()
