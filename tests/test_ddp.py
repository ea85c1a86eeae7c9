"""Data-parallel training with torchrun on CPU (gloo): one DDP step of 2 ranks x batch b equals one
process with batch 2b of the same examples, and one process with --grad-accum 2 of batch b; the
trainer under torchrun writes its files once, reports global tokens/s, and resumes."""
import json
import sys

import numpy as np
import pytest
import torch

from bounds import adamw_first_step_error, gradient_error, margins, record_margin, terms_abs
from conftest import ROOT
from ddp_worker import CPU, GPT, micro_batches, one_step, setup
from numpy_gpt.optim import lr_at
from test_numpy_cli import SMALL, run

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def gloo_lines(stdout):
    """ddp_worker.py's last line on each rank: how many gloo threads it has left."""
    return [line for line in stdout.splitlines() if "gloo threads left" in line]


def test_ddp_step_equals_one_big_batch_and_grad_accum(small_text, tmp_path):
    out = tmp_path / "ddp.npz"
    result = run(*TORCHRUN, str(ROOT / "tests" / "ddp_worker.py"), str(small_text), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    if sys.platform == "linux":
        assert sorted(gloo_lines(result.stdout)) == ["rank 0: gloo threads left: 0", "rank 1: gloo threads left: 0"]
    with np.load(out, allow_pickle=False) as z:
        ddp_grads = {k[5:]: z[k] for k in z.files if k.startswith("grad ")}
        ddp_params = {k[6:]: z[k] for k in z.files if k.startswith("param ")}

    # (a) one process, one batch of 2b: rank 0's examples then rank 1's
    args, config, train_ids = setup(small_text)
    (x0, y0, no_masks), = micro_batches(train_ids, args, 0, 0, config, CPU, torch.float32)
    (x1, y1, _), = micro_batches(train_ids, args, 0, 1, config, CPU, torch.float32)
    model = GPT(config, seed=args.seed)
    big_grads, big_params = one_step(model, model, args, [(torch.cat([x0, x1]), torch.cat([y0, y1]), no_masks)], world=1)
    # (b) one process, --grad-accum 2 of batch b: its micro-batches 0 and 1 are the ranks' batches
    args2, _, _ = setup(small_text, grad_accum=2)
    accum_batches = micro_batches(train_ids, args2, 0, 0, config, CPU, torch.float32)
    assert torch.equal(accum_batches[0][0], x0) and torch.equal(accum_batches[1][0], x1)
    model = GPT(config, seed=args.seed)
    acc_grads, acc_params = one_step(model, model, args2, accum_batches, world=1)

    # The bars, entry by entry (tests/bounds.py): each float32 gradient entry lies within
    # gradient_error of the exact one, a bound set by the sum of its terms' absolute values over the
    # batch's N = 2b T positions (a LayerNorm bias gradient that cancels to near zero is held to its
    # terms' size, not its own), so two of them differ by at most twice that. The updated parameters:
    # AdamW's first step maps each entry's gradient error onto its update with its own derivative
    # (adamw_first_step_error); an entry whose gradient is within rounding of zero may move anywhere in
    # [-lr, lr], one whose gradient stands clear of its error is pinned.
    terms = terms_abs(GPT(config, seed=args.seed), [(torch.cat([x0, x1]), torch.cat([y0, y1]), None)])
    grad_err = {k: gradient_error(t, 2 * x0.numel(), config) for k, t in terms.items()}
    lr = lr_at(0, args.lr, args.min_lr, args.warmup_steps, args.steps)
    p0 = GPT(config, seed=args.seed).numpy_params()
    figures = {}
    for name, grads, params in (("batch 2b", big_grads, big_params), ("grad-accum 2", acc_grads, acc_params)):
        g_margin = margins({k: ddp_grads[k] - g for k, g in grads.items()}, {k: 2 * e for k, e in grad_err.items()})
        p_bound = adamw_first_step_error(grads, grad_err, p0, lr, args.grad_clip)
        p_margin = margins({k: ddp_params[k] - p for k, p in params.items()}, p_bound)
        assert set(g_margin) == set(ddp_grads) and set(p_margin) == set(ddp_params)
        bad = [(f"grad {k}", m) for k, m in g_margin.items() if not m <= 1]
        bad += [(f"param {k}", m) for k, m in p_margin.items() if not m <= 1]
        assert not bad, f"measured / bar above 1: {bad}"
        figures[name] = (max(g_margin.items(), key=lambda kv: kv[1]), max(p_margin.items(), key=lambda kv: kv[1]))
        if name == "grad-accum 2":
            # exactly equal: each micro-batch gradient is computed as on its rank, and DDP's (g0 + g1) / 2
            # equals the accumulated g0 / 2 + g1 / 2 because halving is exact in binary floating point
            assert all(np.array_equal(ddp_grads[k], grads[k]) and np.array_equal(ddp_params[k], params[k])
                       for k in grads)
        moved = max(np.abs(params[k] - p).max() for k, p in p0.items())
        assert moved > 1e-6, "the step must change the parameters"
    # the bar resolves a real difference: gradients 0.1% off fail it
    off = margins({k: ddp_grads[k] - 0.999 * g for k, g in big_grads.items()}, {k: 2 * e for k, e in grad_err.items()})
    assert max(off.values()) > 10, off
    # and so does the step's: the parameters with weight decay left out (lr wd p, 3e-7 of a weight of 0.1)
    p_bound = adamw_first_step_error(big_grads, grad_err, p0, lr, args.grad_clip)
    undecayed = {k: p + (lr * args.weight_decay * p0[k] if p.ndim == 2 else 0) for k, p in big_params.items()}
    off = margins({k: ddp_params[k] - p for k, p in undecayed.items()}, p_bound)
    assert {k for k, m in off.items() if m > 1} == {k for k, p in p0.items() if p.ndim == 2}, off
    for name, (g, p) in figures.items():
        record_margin("test_ddp_step_equals_one_big_batch", g[1], f"gradients vs {name}")
        record_margin("test_ddp_step_equals_one_big_batch", p[1], f"updated parameters vs {name}")
    print("\nDDP 2 ranks x batch 4 vs one process (float32; measured / bar, the worst entry of each, bars in tests/bounds.py):")
    for name, (g, p) in figures.items():
        print(f"  vs {name:<13} gradients {g[1]:.2e} ({g[0]}), updated parameters {p[1]:.2e} ({p[0]})")


def train(*flags, distributed=False):
    return run(*(TORCHRUN if distributed else []), "-m", "torch_gpt.train", "--device", "cpu", *SMALL, *flags)


def weights(out):
    with np.load(out / "kid.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if not k.startswith("__")}


def test_torchrun_trainer_matches_grad_accum_writes_once_and_resumes(small_text, tmp_path):
    common = ["--data", str(small_text), "--eval-interval", "2", "--batch-size", "4"]
    ddp = train(*common, "--out", str(tmp_path / "ddp"), "--steps", "4", distributed=True)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("done: val loss") == 1 and ddp.stdout.count("torch_gpt: ") == 1   # rank 0 alone speaks
    assert "2 process(es) x 1 micro-batch(es) of 4: 128 tokens per step" in ddp.stdout
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 2, 4]                                   # written once, by rank 0
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == [
        "step_00000.npz", "step_00002.npz", "step_00004.npz"]

    single = train(*common, "--out", str(tmp_path / "single"), "--steps", "4", "--grad-accum", "2")
    assert single.returncode == 0 and "1 process(es) x 2 micro-batch(es) of 4: 128 tokens per step" in single.stdout
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    # Bit-identical, not just close: each rank computes its micro-batch's gradient exactly as the single
    # process does, and DDP's (g0 + g1) / 2 equals the accumulated g0 / 2 + g1 / 2 exactly, since
    # halving is exact in binary floating point. (With 3 ranks it would be close, not equal.)
    assert all(np.array_equal(a[k], b[k]) for k in a)

    # a distributed run stopped at step 2 and resumed with torchrun ends where the straight run ends
    part = train(*common, "--out", str(tmp_path / "resumed"), "--steps", "2", distributed=True)
    assert part.returncode == 0, part.stderr[-3000:]
    resumed = train(*common, "--out", str(tmp_path / "resumed"), "--steps", "4", "--resume", distributed=True)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr[-3000:]
    c = weights(tmp_path / "resumed")
    assert all(np.array_equal(a[k], c[k]) for k in a)


def test_resume_needs_the_same_micro_batches_per_step(small_text, tmp_path):
    common = ["--data", str(small_text), "--eval-interval", "2", "--batch-size", "4", "--out", str(tmp_path / "r")]
    assert train(*common, "--steps", "2", "--grad-accum", "2").returncode == 0
    result = train(*common, "--steps", "4", "--resume")
    assert result.returncode == 1 and "2 micro-batches per step (processes x --grad-accum; now 1)" in result.stderr
    assert "--micro-batches" not in result.stderr                         # no such flag
    ok = train(*common, "--steps", "4", "--resume", distributed=True)     # 2 ranks x 1 = 1 rank x 2
    assert ok.returncode == 0, ok.stderr[-3000:]


@pytest.mark.skipif(sys.platform != "linux", reason="counts gloo's threads by their names in /proc")
@pytest.mark.parametrize("ends", ["done", "with an error"])
def test_torchrun_trainer_destroys_its_process_group_before_python_shuts_down(small_text, tmp_path, ends):
    """Without care, rank 1 aborts now and then ("terminate called without an active exception") after
    rank 0 has finished: destroy_process_group leaves the gloo group alive, and with it its threads, into
    interpreter shutdown: torch.distributed.nn, which DDP imports, holds the default group in its
    functions' default arguments when it is first imported after init_process_group; and an exception's
    traceback holds the frame with the DDP wrapper, whose reducer holds the group. Every rank ends
    with none of gloo's threads left, whether the run is done or stops with an error (a NaN loss here)."""
    flags = ["--batch-size", "4", "--data", str(small_text), "--out", str(tmp_path / "o"), "--device", "cpu"]
    flags += (["--steps", "2", "--eval-interval", "2"] if ends == "done" else
              ["--steps", "200", "--eval-interval", "1000", "--lr", "1e6", "--grad-clip", "0", "--warmup-steps", "0"])
    result = run(*TORCHRUN, str(ROOT / "tests" / "ddp_worker.py"), "--trainer", *SMALL, *flags)
    if ends == "done":
        assert result.returncode == 0 and "done: val loss" in result.stdout, result.stderr[-3000:]
    else:
        assert result.returncode != 0 and "error: the loss became nan" in result.stderr, result.stderr[-3000:]
    assert sorted(gloo_lines(result.stdout)) == ["rank 0: gloo threads left: 0", "rank 1: gloo threads left: 0"]


@pytest.mark.parametrize("flag", ["--grad-accum"])
def test_grad_accum_must_be_positive(small_text, tmp_path, flag):
    result = train("--data", str(small_text), "--out", str(tmp_path / "o"), flag, "0")
    assert result.returncode == 1 and "error: --grad-accum must be at least 1, got 0" in result.stderr
