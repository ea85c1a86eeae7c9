"""torch_gpt on a CUDA GPU, run on the GPU itself: what tests/test_device_paths.py can only check on a CPU.

CI has no GPU, so these skip there with one line. On a machine with one:

    pytest -s -n 0 tests/test_cuda.py   # -s prints the measured differences that docs/gpu.md quotes (-n 0: one process, so -s shows them)

The same model in float64 on the GPU and on the CPU; a step under bf16 autocast and compiled; the
masks drawn on the GPU; the kid's steps repeating bit for bit; and the trainer itself on the GPU: a
float64 run that is numpy_gpt's run, a run that moves from numpy_gpt to the GPU, and a stop and resume
that is bit-identical, graphed, compiled and launched from Python; the trainer's CUDA graph against
the kernels Python launches.
"""
import signal

import numpy as np
import pytest
import torch

import torch_gpt.train as trainer
from benchmarks.loops import torch_train_step
from numpy_gpt.machinery.checkpoint import load_state
from numpy_gpt.config import GPTConfig
from numpy_gpt.model import dropout_masks
from parity.compare import TOLERANCE, compare
from torch_gpt.model import GPT

from bounds import logged_run_rows
from test_loop import (BACKENDS, FLOAT64, STOP_AT, read_log, same_weights, shadowed, small_text,  # noqa: F401
                       without_timing)
from test_numpy_cli import SMALL, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
GPU, CPU = torch.device("cuda"), torch.device("cpu")
KID = GPTConfig()


def kid_step(device, dtype, masks=True, autocast=False, compile=False, seed=0):
    """One forward and backward of the kid at batch 8, dropout masks from numpy_gpt -> (loss, {name: grad})
    as float64 NumPy. The same seed gives the same weights, batch and masks on any device."""
    model = GPT(KID, seed=seed, dtype=dtype).to(device)
    rng = np.random.default_rng(seed)
    x, y = (torch.from_numpy(rng.integers(0, KID.vocab_size, (8, KID.block_size))).to(device) for _ in range(2))
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    m = [torch.from_numpy(a).to(device) for a in dropout_masks(KID, 8, KID.block_size, 0.1, rng, np_dtype)]
    fn = torch.compile(model) if compile else model
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        _, loss = fn(x, y, masks=m if masks else None)
    loss.backward()
    return loss.item(), {name: p.grad.double().cpu().numpy() for name, p in model.named_parameters()}


def worst(rows):
    return max(rows, key=lambda r: r.max_rel)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_kid_on_the_gpu_is_the_cpu_model(dtype):
    """The kid, forward and backward with dropout, on the GPU and on the CPU: the loss and every gradient
    within parity's tolerance for the dtype (parity.compare.TOLERANCE) of each tensor's scale. In float32 without
    TF32, which torch leaves off for float32 products."""
    assert not torch.backends.cuda.matmul.allow_tf32
    loss_gpu, grads_gpu = kid_step(GPU, getattr(torch, dtype))
    loss_cpu, grads_cpu = kid_step(CPU, getattr(torch, dtype))
    rows = [compare("loss", loss_gpu, loss_cpu, TOLERANCE[dtype])]
    rows += [compare(name, grads_gpu[name], grads_cpu[name], TOLERANCE[dtype]) for name in grads_cpu]
    print(f"\n{dtype}, GPU against CPU: worst {worst(rows)}")
    assert all(row.ok for row in rows), [row for row in rows if not row.ok]


def test_bf16_autocast_on_the_gpu_follows_float32():
    """The step as the trainer runs it on a GPU, under bf16 autocast: its loss within bfloat16's rounding
    of float32's (8 bits: 0.4% a rounding; 1% allowed), and its gradient points the same way, the
    cosine over all parameters above 0.99. A product left in float32, or one that lost its inputs' scale,
    would not be caught by the loss alone; a wrong gradient would be by the cosine."""
    loss16, grads16 = kid_step(GPU, torch.float32, autocast=True)
    loss32, grads32 = kid_step(GPU, torch.float32)
    a, b = (np.concatenate([g[name].ravel() for name in sorted(g)]) for g in (grads16, grads32))
    cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    print(f"\nbf16 autocast against float32 on the GPU: loss {loss16:.6f} against {loss32:.6f}, "
          f"gradient cosine {cosine:.6f}")
    assert abs(loss16 - loss32) < 1e-2 * loss32
    assert cosine > 0.99
    assert all(np.isfinite(g).all() for g in grads16.values())


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16"])
def test_compiled_on_the_gpu_is_the_eager_model(autocast):
    """torch.compile's Triton kernels against the eager model, with dropout masks: in float32 within
    parity's float32 tolerance (they sum in other orders); under bf16 autocast the loss within 1e-3 and
    each gradient within 2e-2 of its scale (the fused kernels keep in float32 what eager rounds to
    bfloat16 between kernels: a few bfloat16 roundings, 0.4% each)."""
    loss_c, grads_c = kid_step(GPU, torch.float32, autocast=autocast, compile=True)
    loss_e, grads_e = kid_step(GPU, torch.float32, autocast=autocast)
    tol = 2e-2 if autocast else TOLERANCE["float32"]
    rows = [compare("loss", loss_c, loss_e, 1e-3 if autocast else tol)]
    rows += [compare(name, grads_c[name], grads_e[name], tol) for name in grads_e]
    print(f"\ncompiled against eager, {'bf16 autocast' if autocast else 'float32'}: worst {worst(rows)}")
    assert all(row.ok for row in rows), [row for row in rows if not row.ok]


def test_dropout_masks_drawn_on_the_gpu():
    """device_dropout_masks on the GPU: the same seed, the same masks; another seed, others; p of them 0."""
    p = 0.1
    masks = trainer.device_dropout_masks(KID, 32, KID.block_size, p, 1234, GPU, torch.float32)
    assert all(m.device.type == "cuda" and m.shape == (32, KID.block_size, KID.n_embd) for m in masks)
    assert all(torch.equal(a, b) for a, b in zip(masks, trainer.device_dropout_masks(
        KID, 32, KID.block_size, p, 1234, GPU, torch.float32)))
    assert not torch.equal(masks[0], trainer.device_dropout_masks(KID, 32, KID.block_size, p, 1235, GPU,
                                                                  torch.float32)[0])
    dropped = torch.cat([(m == 0).flatten() for m in masks]).double().mean().item()   # 4.2M draws: sd 1.5e-4
    assert abs(dropped - p) < 2e-3, dropped
    assert set(torch.cat([m.flatten() for m in masks]).unique().tolist()) == {0.0, float(np.float32(1 / (1 - p)))}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_the_kids_gpu_steps_repeat_bit_for_bit(compiled, restore_determinism):
    """20 steps of the kid at its training shape, as the trainer runs them on a GPU (bf16 autocast, the
    GPU's masks, repeatable_runs), twice from the same seed: the same weights, bit for bit. Without
    repeatable_runs, measured on an H100: weights up to 1.5e-2 apart after 20 steps, eager and compiled
    alike (cuDNN's attention backward adds with atomics; the resume tests' small model did not show it)."""
    weights = []
    for _ in range(2):
        step = torch_train_step(KID, 32, compile=compiled, bf16=True, device="cuda")
        for _ in range(20):
            step()
        weights.append([p.detach().cpu() for p in step.model.parameters()])
    assert torch.are_deterministic_algorithms_enabled()
    assert all(torch.equal(a, b) for a, b in zip(*weights))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_graphed_step_is_the_launched_step(compiled, restore_determinism):
    """The trainer's CUDA graph replays the kernels that Python launches, on the same numbers: 20 steps of
    the kid (bf16 autocast, the GPU's masks), graphed and launched, give the same losses and weights, bit
    for bit.
    The learning rate is 2^-10, which float32 holds exactly: the graph's AdamW reads it from a float32
    tensor, the launched one as a Python float."""
    losses, weights = [], []
    for cuda_graph in (False, True):
        step = torch_train_step(KID, 32, compile=compiled, bf16=True, device="cuda", cuda_graph=cuda_graph, lr=2 ** -10)
        losses.append(torch.stack([step() for _ in range(20)]).cpu())
        weights.append([p.detach().cpu() for p in step.model.parameters()])
    assert torch.equal(*losses)
    assert all(torch.equal(a, b) for a, b in zip(*weights))


# ------------------------------------------------------------------------------------------------
# the trainer on the GPU


def train(module, text, out, *flags):
    device = ["--device", "cuda"] if module == "torch_gpt" else []
    return run("-m", f"{module}.train", *device, "--data", str(text), "--out", str(out), *SMALL, *flags)


def train_until(module, stop_at, text, out, *flags):
    device = ["--device", "cuda"] if module == "torch_gpt" else []
    return run("-c", STOP_AT, f"{module}.train", BACKENDS[module], str(stop_at), str(int(signal.SIGTERM)),
               *device, "--data", str(text), "--out", str(out), *SMALL, *flags)


def test_a_float64_run_on_the_gpu_is_numpy_gpts_run(small_text, shadowed, tmp_path):
    """In float64 the GPU draws numpy_gpt's dropout masks: the whole run, dropout on, ends within the bars
    of parity's error model (numpy_gpt.machinery.rounding.Shadow) of numpy_gpt's, in weights, AdamW's moments and every
    logged loss, and writes the same samples."""
    gpu, ref = tmp_path / "gpu", tmp_path / "numpy"
    for module, out in (("torch_gpt", gpu), ("numpy_gpt", ref)):
        result = train(module, small_text, out, *FLOAT64)
        assert result.returncode == 0, result.stderr
    assert "device cuda" in train("torch_gpt", small_text, tmp_path / "again", *FLOAT64, "--steps", "1").stdout
    rows = logged_run_rows(gpu, ref, ref, shadowed(*FLOAT64))
    print(f"\nfloat64 run on the GPU against numpy_gpt's: worst {max(rows, key=lambda r: r.margin)}")
    assert all(row.ok for row in rows), [row for row in rows if not row.ok]
    assert [e["sample"] for e in read_log(gpu)] == [e["sample"] for e in read_log(ref)]


def test_a_run_moves_from_numpy_gpt_to_the_gpu(small_text, shadowed, tmp_path):
    """numpy_gpt stops at step 5; torch_gpt on the GPU resumes it to step 10, and ends within the bars of
    parity's error model of numpy_gpt's run that never stopped."""
    moved, ref = tmp_path / "moved", tmp_path / "numpy"
    assert train_until("numpy_gpt", 5, small_text, moved, *FLOAT64).returncode == 128 + signal.SIGTERM
    resumed = train("torch_gpt", small_text, moved, *FLOAT64, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "was written by numpy_gpt; continuing it with torch_gpt" in resumed.stdout
    assert train("numpy_gpt", small_text, ref, *FLOAT64).returncode == 0
    assert load_state(moved / "kid.pt")["step"] == 10 and load_state(moved / "kid.pt")["backend"] == "torch_gpt"
    rows = logged_run_rows(moved, ref, ref, shadowed(*FLOAT64))
    assert all(row.ok for row in rows), [row for row in rows if not row.ok]


@pytest.mark.parametrize("flags", [(), ("--compile",), ("--cuda-graph", "off")],
                         ids=["graphed", "compiled", "launched"])
def test_a_stopped_gpu_run_resumes_bit_identical(flags, small_text, tmp_path):
    """The GPU's own run (float32, bf16 autocast, the GPU's dropout masks), stopped by SIGTERM at step 5
    and resumed, ends with the very weights, log and samples of the run that never stopped: as a CUDA
    graph a step (the default; the resumed run launches its first steps from Python again, then captures
    a graph of its own), compiled and graphed, and launched from Python. On a GPU this needs kernels that add in a
    fixed order (repeatable_runs) as well as the same random streams: without them the compiled run
    failed here (Inductor's embedding backward adds with atomics). The compiled run also recompiles
    after the resume."""
    flags = ("--steps", "10", "--eval-interval", "5", *flags)
    graphed = "off" not in flags
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    result = train("torch_gpt", small_text, straight, *flags)
    assert result.returncode == 0, result.stderr
    assert "(bf16 autocast), device cuda" in result.stdout
    assert ("(a CUDA graph a step)" in result.stdout) is graphed
    precision = "bf16 autocast" + (" (compiled)" if "--compile" in flags else "") + (" (CUDA graph)" if graphed else "")
    assert load_state(straight / "kid.pt")["precision"] == precision
    assert train_until("torch_gpt", 5, small_text, stopped, *flags).returncode == 128 + signal.SIGTERM
    resumed = train("torch_gpt", small_text, stopped, *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(straight / "kid.npz", stopped / "kid.npz")
    assert without_timing(read_log(straight)) == without_timing(read_log(stopped))
